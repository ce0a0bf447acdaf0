"""Whether nginx's `sites-enabled/default` is still the distro's untouched default site.

The default site is a dpkg conffile of nginx-common; "untouched" means the link points at
sites-available/default and that file's md5 is the one dpkg recorded at install. Anything
else (an edited default, a link elsewhere, a regular file) is the admin's and is kept.
"""

from __future__ import annotations

from pyinfra.api import FactBase

_COMMAND = r"""
if [ ! -d /etc/nginx ]; then echo installed=no; exit 0; fi
echo installed=yes
en=/etc/nginx/sites-enabled/default av=/etc/nginx/sites-available/default
if [ -L "$en" ]; then echo "link=$(readlink "$en")"; elif [ -e "$en" ]; then echo link=FILE; else echo link=; fi
[ -f "$av" ] && echo "md5=$(md5sum < "$av" | cut -d' ' -f1)"
echo "dpkg=$(dpkg-query -W -f='${Conffiles}\n' nginx-common 2>/dev/null | awk '$1=="/etc/nginx/sites-available/default" {print $2}')"
"""


def parse_default_site(output: list[str]) -> dict:
    raw = dict(line.split("=", 1) for line in output if "=" in line)
    return {"installed": raw.get("installed") == "yes", "link": raw.get("link") or None,
            "md5": raw.get("md5") or None, "dpkg_md5": raw.get("dpkg") or None}


def default_site_removable(state: dict) -> bool | None:
    """True: untouched default enabled (remove it); None: nginx not installed yet (the
    default apt is about to install is untouched); False: nothing to do or the admin's."""
    if not state.get("installed"):
        return None
    link = state.get("link")
    if link not in ("/etc/nginx/sites-available/default", "../sites-available/default"):
        return False
    return bool(state.get("md5")) and state.get("md5") == state.get("dpkg_md5")


class NginxDefaultSite(FactBase[dict]):
    def command(self) -> str:
        return _COMMAND

    @staticmethod
    def default() -> dict:
        return {"installed": False}

    def process(self, output: list[str]) -> dict:
        return parse_default_site(output)
