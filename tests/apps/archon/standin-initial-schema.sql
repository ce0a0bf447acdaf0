-- Stand-in for supabase/postgres migrations/db/init-scripts/00000000000000-initial-schema.sql
-- + 00000000000001-auth-schema.sql (develop @ 7db7e1a), the parts Archon's schema and the
-- deploy rely on: the API roles, authenticator, the extensions schema, auth.role().
alter user supabase_admin with superuser createdb createrole replication bypassrls;
create schema if not exists extensions;
create extension if not exists "uuid-ossp" with schema extensions;
create extension if not exists pgcrypto with schema extensions;
create role anon nologin noinherit;
create role authenticated nologin noinherit;
create role service_role nologin noinherit bypassrls;
create user authenticator noinherit;
grant anon to authenticator;
grant authenticated to authenticator;
grant service_role to authenticator;
grant supabase_admin to authenticator;
create user supabase_auth_admin noinherit createrole login noreplication;
create user supabase_storage_admin noinherit createrole login noreplication;
grant usage on schema public to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to postgres, anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to postgres, anon, authenticated, service_role;
grant usage on schema extensions to postgres, anon, authenticated, service_role;
alter user supabase_admin set search_path to public, extensions;
create schema if not exists auth authorization supabase_admin;
create or replace function auth.role() returns text as $$
  select nullif(current_setting('request.jwt.claim.role', true), '')::text;
$$ language sql stable;
create or replace function auth.uid() returns uuid as $$
  select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid;
$$ language sql stable;
grant usage on schema auth to anon, authenticated, service_role;
