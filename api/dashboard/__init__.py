"""The dashboard: server-rendered pages (Jinja) over the same application services as the JSON API."""
