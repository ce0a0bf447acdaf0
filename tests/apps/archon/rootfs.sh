#!/bin/sh
# Build step of the stand-in images: assemble a minimal root filesystem in /rootfs with
# only what the stand-in runs (busybox for the shell tools, python3 or PostgreSQL and
# their shared libraries). docker-in-docker uses the vfs driver, which copies the whole
# image for every container: a few MB and few files make containers start in well under
# a second instead of seconds.
set -eu
kind=$1
R=/rootfs
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get update -qq
extra=""
# The build's own Debian decides the PostgreSQL: on Debian 13 (archon) 17 + pgvector, like
# supabase/postgres 17; on Debian 12 (hivesync, whose upstream runs postgres:15) 15, no pgvector.
. /etc/os-release
if [ "$VERSION_ID" = 12 ]; then PGV=15; PGVECTOR=""; else PGV=17; PGVECTOR="postgresql-17-pgvector"; fi
[ "$kind" = postgres ] && extra="postgresql-$PGV $PGVECTOR"
apt-get install -y -qq --no-install-recommends busybox-static $extra >/dev/null

mkdir -p $R/usr/bin $R/usr/sbin $R/usr/lib $R/usr/lib64 $R/usr/local/bin $R/etc $R/tmp $R/root $R/var/run $R/run
for d in bin sbin lib lib64; do ln -s usr/$d $R/$d; done
chmod 1777 $R/tmp
cp /bin/busybox $R/usr/bin/busybox
for applet in $(/bin/busybox --list); do
    [ -e "$R/usr/bin/$applet" ] || ln -s busybox "$R/usr/bin/$applet"
done
printf '#!/bin/sh\nexec /bin/sh "$@"\n' > $R/usr/bin/bash && chmod 755 $R/usr/bin/bash

copy() {  # PATH...: files (as they are) and every shared library they load
    for f in "$@"; do
        cp -a --parents "$f" $R
        [ -f "$f" ] || continue
        ldd "$f" 2>/dev/null | awk '/=> \// {print $3} /^[ \t]*\/lib/ {print $1}' | while read -r lib; do
            [ -e "$R$lib" ] || cp -L --parents "$lib" $R
        done
    done
}
mkdir -p $R/usr/lib/x86_64-linux-gnu
cp -L /lib64/ld-linux-x86-64.so.2 $R/usr/lib64/
cp -L /lib64/ld-linux-x86-64.so.2 $R/usr/lib/x86_64-linux-gnu/
copy /etc/ssl/certs/ca-certificates.crt
[ -d /usr/lib/locale/C.utf8 ] && cp -a --parents /usr/lib/locale/C.utf8 $R

if [ "$kind" = http ]; then
    copy /usr/bin/python3.11
    ln -s python3.11 $R/usr/bin/python3
    ln -s python3.11 $R/usr/bin/python
    cp -a --parents /usr/lib/python3.11 $R
    cd $R/usr/lib/python3.11
    rm -rf test ensurepip idlelib tkinter lib2to3 pydoc_data distutils turtledemo unittest sqlite3 \
        config-3.11-x86_64-linux-gnu site-packages dist-packages venv curses dbm
    # (the packages' precompiled __pycache__ stay: healthchecks start python every second)
    cd /
    for so in /usr/lib/python3.11/lib-dynload/*.so; do copy "$so"; done
    printf 'root:x:0:0:root:/root:/bin/sh\n' > $R/etc/passwd
    printf 'root:x:0:\n' > $R/etc/group
else
    # JIT stays off: no llvmjit (and no 100 MB libLLVM)
    rm -rf /usr/lib/postgresql/$PGV/lib/llvmjit* /usr/lib/postgresql/$PGV/lib/bitcode /usr/share/postgresql/$PGV/man
    # supabase/postgres lets its non-superuser `postgres` create vector (supautils:
    # privileged_role postgres, privileged_extensions ... vector; objects owned by
    # supabase_admin): a trusted extension does the same here (owned by the bootstrap
    # superuser, supabase_admin), so complete_setup.sql's CREATE EXTENSION vector runs as postgres
    [ -z "$PGVECTOR" ] || echo "trusted = true" >> /usr/share/postgresql/$PGV/extension/vector.control
    cp -a --parents /usr/lib/postgresql/$PGV /usr/share/postgresql/$PGV /usr/share/zoneinfo $R
    for f in /usr/lib/postgresql/$PGV/bin/* /usr/lib/postgresql/$PGV/lib/*.so; do copy "$f"; done
    rm -f $R/usr/bin/setpriv  # busybox's lacks --reuid/--regid: util-linux's
    copy /usr/bin/setpriv
    for b in psql pg_dump pg_dumpall pg_isready pg_restore createdb initdb postgres; do
        ln -s /usr/lib/postgresql/$PGV/bin/$b $R/usr/local/bin/$b
    done
    grep -E '^(root|postgres):' /etc/passwd > $R/etc/passwd
    grep -E '^(root|postgres|ssl-cert):' /etc/group > $R/etc/group
    mkdir -p $R/var/lib/postgresql $R/var/run/postgresql
    chown -R postgres:postgres $R/var/lib/postgresql $R/var/run/postgresql
fi
echo "rootfs: $(du -sh $R | cut -f1), $(find $R | wc -l) files"
