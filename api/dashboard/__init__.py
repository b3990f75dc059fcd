"""The dashboard: server-rendered pages (Jinja) over the same application services as the JSON API.

pages.py lists a controller per section (key_pages, billing_pages, log_pages, model_pages, prompt_pages) and the
pages without a session (auth_pages); what they share is in rendering.py, the time ranges in time_ranges.py."""
