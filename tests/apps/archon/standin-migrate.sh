#!/bin/sh
# Stand-in for supabase/postgres migrations/db/migrate.sh (develop @ 7db7e1a), the image's
# /docker-entrypoint-initdb.d/migrate.sh: as supabase_admin create postgres, run
# init-scripts/*.sql as postgres, set supabase_admin's password, run migrations/*.sql as
# supabase_admin. Needs the cluster's superuser to be supabase_admin.
set -eu
export PGDATABASE="${POSTGRES_DB:-postgres}" PGPASSWORD="${POSTGRES_PASSWORD:-}"
db=/docker-entrypoint-initdb.d
psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc -q -U supabase_admin <<EOSQL
do \$\$
begin
  if not exists (select from pg_roles where rolname = 'postgres') then
    create role postgres superuser login password '$PGPASSWORD';
    alter database postgres owner to postgres;
  end if;
end \$\$
EOSQL
for sql in "$db"/init-scripts/*.sql; do
    [ -e "$sql" ] || continue
    echo "$0: running $sql"
    psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc -q -U postgres -f "$sql"
done
psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc -q -U postgres -c "ALTER USER supabase_admin WITH PASSWORD '$PGPASSWORD'"
for sql in "$db"/migrations/*.sql; do
    [ -e "$sql" ] || continue
    echo "$0: running $sql"
    psql -v ON_ERROR_STOP=1 --no-password --no-psqlrc -q -U supabase_admin -f "$sql"
done
