#!/bin/sh
# Like the official redis image: without a config file, redis-server listens everywhere in
# the container but its protected mode would refuse the backend's container: turn it off
# (the port is published on 127.0.0.1 only).
if [ "${1:-}" = redis-server ]; then
    shift
    exec redis-server --protected-mode no "$@"
fi
exec "$@"
