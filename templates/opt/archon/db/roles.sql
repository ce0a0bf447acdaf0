-- Managed by pyinfra (deploys/archon.py). Mounted at
-- /docker-entrypoint-initdb.d/init-scripts/99-roles.sql: run once by the Supabase image's
-- init on a new volume (as in Supabase's self-hosting compose, docker/volumes/db/roles.sql):
-- PostgREST logs in as authenticator with POSTGRES_PASSWORD.
\set pgpass `echo "$POSTGRES_PASSWORD"`
ALTER USER authenticator WITH PASSWORD :'pgpass';
