#!/bin/sh
# Build step of the ingestor stand-in base image: a minimal root filesystem in /rootfs
# with busybox, python3.11 (stdlib incl. sqlite3) and the wheels in /wheels unpacked
# (alembic, SQLAlchemy and their dependencies). Small images keep docker-in-docker
# (vfs: every container copies its image) fast. Same recipe as tests/apps/archon/rootfs.sh
# minus PostgreSQL, plus sqlite3 and the wheels.
set -eu
R=/rootfs
export DEBIAN_FRONTEND=noninteractive
printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d
apt-get update -qq
apt-get install -y -qq --no-install-recommends busybox-static libsqlite3-0 >/dev/null

mkdir -p $R/usr/bin $R/usr/sbin $R/usr/lib $R/usr/lib64 $R/usr/local/bin $R/etc $R/tmp $R/root $R/var/run $R/run
for d in bin sbin lib lib64; do ln -s usr/$d $R/$d; done
chmod 1777 $R/tmp
cp /bin/busybox $R/usr/bin/busybox
for applet in $(/bin/busybox --list); do
    [ -e "$R/usr/bin/$applet" ] || ln -s busybox "$R/usr/bin/$applet"
done

copy() {  # PATH...: files and every shared library they load
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

copy /usr/bin/python3.11
ln -s python3.11 $R/usr/bin/python3
ln -s python3.11 $R/usr/bin/python
cp -a --parents /usr/lib/python3.11 $R
cd $R/usr/lib/python3.11
rm -rf test ensurepip idlelib tkinter lib2to3 pydoc_data distutils turtledemo \
    config-3.11-x86_64-linux-gnu site-packages dist-packages venv curses
cd /
for so in /usr/lib/python3.11/lib-dynload/*.so; do copy "$so"; done
mkdir -p $R/usr/lib/python3/dist-packages
python3 -c "import glob, sys, zipfile; [zipfile.ZipFile(w).extractall(sys.argv[1]) for w in glob.glob('/wheels/*.whl')]" \
    $R/usr/lib/python3/dist-packages
printf '#!/usr/bin/python3\nimport sys\nfrom alembic.config import main\nsys.exit(main())\n' > $R/usr/local/bin/alembic
chmod 755 $R/usr/local/bin/alembic
printf 'root:x:0:0:root:/root:/bin/sh\n' > $R/etc/passwd
printf 'root:x:0:\n' > $R/etc/group
echo "rootfs: $(du -sh $R | cut -f1), $(find $R | wc -l) files"
