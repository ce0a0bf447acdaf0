"""Host fingerprints that prove "nothing changed" (package list, config checksums)."""

SNAPSHOT = (
    "dpkg-query -W -f='${Package} ${Version}\\n' | sort; "
    "find /etc /opt /usr/local -xdev -type f -print0 2>/dev/null | sort -z | xargs -0 sha256sum; "
    "systemctl list-unit-files --no-legend --no-pager | sort"
)


def snapshot(host) -> str:
    """Packages, checksums of every file under /etc, /opt, /usr/local, and unit files."""
    return host.exec(SNAPSHOT).stdout
