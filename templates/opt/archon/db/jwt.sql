-- Managed by pyinfra (deploys/archon.py). Mounted at
-- /docker-entrypoint-initdb.d/init-scripts/99-jwt.sql: run once by the Supabase image's
-- init on a new volume (as Supabase's docker/volumes/db/jwt.sql): the JWT settings the
-- database's own functions read.
\set jwt_secret `echo "$JWT_SECRET"`
\set jwt_exp `echo "$JWT_EXP"`
ALTER DATABASE postgres SET "app.settings.jwt_secret" TO :'jwt_secret';
ALTER DATABASE postgres SET "app.settings.jwt_exp" TO :'jwt_exp';
