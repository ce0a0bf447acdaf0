-- Stand-in for the supabase/postgres migrations that demote postgres (develop @ 7db7e1a:
-- "postgres user demoted in post-setup", migrate.sh): postgres keeps the developer's
-- rights but is no superuser; supabase_admin stays the only superuser.
alter role postgres nosuperuser createdb createrole replication bypassrls;
grant anon, authenticated, service_role to postgres;
grant all on schema public to postgres;
grant all on schema extensions to postgres;
