#!/bin/sh
# Build step after ../archon/rootfs.sh (a busybox + python3 root filesystem in /rootfs):
# add what the sample backend or redis needs, with every shared library it loads.
# docker-in-docker test hosts use the vfs driver, which copies the whole image for every
# container: tens of MB instead of hundreds keep the rollback test's recreates quick.
set -eu
kind=$1
R=/rootfs
copy() {  # PATH...: files (as they are) and every shared library they load
    for f in "$@"; do
        cp -a --parents "$f" $R
        [ -f "$f" ] || continue
        ldd "$f" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\/lib/ {print $1}' | while read -r lib; do
            [ -e "$R$lib" ] || cp -L --parents "$lib" $R
        done
    done
}
export DEBIAN_FRONTEND=noninteractive
if [ "$kind" = backend ]; then
    apt-get install -y -qq --no-install-recommends python3-sqlalchemy python3-psycopg2 >/dev/null
    cp -a --parents /usr/lib/python3/dist-packages $R
    find /usr/lib/python3/dist-packages -name '*.so' | while read -r so; do copy "$so"; done
else
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    copy /usr/bin/redis-server "$(readlink -f /usr/bin/redis-server)" /usr/bin/redis-cli
    mkdir -p $R/data
fi
echo "rootfs ($kind): $(du -sh $R | cut -f1), $(find $R | wc -l) files"
