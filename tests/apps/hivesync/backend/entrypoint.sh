#!/bin/sh
# The plan's N.7.3: the backend runs its migrations on start, then serves.
set -e
cd /app
for i in $(seq 1 30); do
    alembic upgrade head && exec python3 /app/app.py
    echo "alembic upgrade head failed (database not ready?), retrying" >&2
    sleep 2
done
exit 1
