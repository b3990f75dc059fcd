#!/bin/sh
# Run once by the postgres image on an empty volume, as its superuser: Mesh's own role, with no more rights than
# owning its database (not a superuser, cannot create databases or roles). The password comes from the container's
# environment (MESH_DB_PASSWORD) and reaches psql as a variable, never a command line.
set -eu
psql -v ON_ERROR_STOP=1 -v password="$MESH_DB_PASSWORD" --username "$POSTGRES_USER" --dbname postgres <<'SQL'
CREATE ROLE mesh LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION PASSWORD :'password';
CREATE DATABASE mesh OWNER mesh;
REVOKE ALL ON DATABASE mesh FROM PUBLIC;
SQL
