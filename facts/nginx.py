"""nginx facts: whether `sites-enabled/default` is the distro's untouched default site, and
the whole loaded config (`nginx -T`: maps and server blocks per file) for adopting what exists.

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


# ----------------------------------------------------------------------------- `nginx -T`

_DUMP = r"""
if ! command -v nginx >/dev/null 2>&1; then echo nginx-dump=absent; exit 0; fi
if out=$(nginx -T 2>/dev/null); then echo nginx-dump=ok; printf '%s\n' "$out"; else echo nginx-dump=failed; fi
"""
_FILE_HEADER = "# configuration file "


def _statements(text: str):
    """(kind, words) per statement of one file: kind "open" ({), "close" (}) or "end" (;).
    Comments are dropped; quotes are kept as part of words (enough for names and maps)."""
    words: list[str] = []
    word = ""
    quote = None
    in_comment = False
    for ch in text:
        if in_comment:
            in_comment = ch != "\n"
            continue
        if quote:
            word += ch
            if ch == quote:
                quote = None
            continue
        if ch in "\"'":
            quote = ch
            word += ch
        elif ch == "#":
            in_comment = True
        elif ch.isspace() or ch in "{};":
            if word:
                words.append(word)
                word = ""
            if ch in "{};":
                yield {"{": "open", "}": "close", ";": "end"}[ch], words
                words = []
        else:
            word += ch


def parse_nginx_dump(output: list[str]) -> dict:
    """{"state": "ok"|"failed"|"absent", "maps": [{"file", "source", "variable"}],
    "servers": [{"file", "names", "listen"}]} from `nginx -T` (a header line first).

    `nginx -T` prints every file it read after a `# configuration file PATH:` line, so
    each map and server block is attributed to the file that defines it."""
    state = (output[0].split("=", 1)[1].strip() if output and output[0].startswith("nginx-dump=") else "failed")
    result: dict = {"state": state, "maps": [], "servers": []}
    if state != "ok":
        return result
    files: list[tuple[str, list[str]]] = []
    for line in output[1:]:
        if line.startswith(_FILE_HEADER) and line.rstrip().endswith(":"):
            files.append((line[len(_FILE_HEADER):].rstrip()[:-1], []))
        elif files:
            files[-1][1].append(line)
    for path, lines in files:
        stack: list[str] = []
        server = None
        for kind, words in _statements("\n".join(lines)):
            if kind == "open":
                block = words[0] if words else ""
                if block == "map" and len(words) >= 3:
                    result["maps"].append({"file": path, "source": words[1], "variable": words[2]})
                if block == "server" and (not stack or stack[-1] == "http"):
                    server = {"file": path, "names": [], "listen": []}
                    result["servers"].append(server)
                stack.append(block)
            elif kind == "close":
                if stack and stack.pop() == "server" and (not stack or stack[-1] == "http"):
                    server = None
            elif server is not None and stack and stack[-1] == "server" and words:
                if words[0] == "server_name":
                    server["names"] += [w.strip("\"'") for w in words[1:]]
                elif words[0] == "listen":
                    server["listen"].append(" ".join(words[1:]))
    return result


def foreign_map_of(dump: dict, variable: str, own_file: str) -> str | None:
    """The file (not ours) whose `map` already defines `variable`, or None."""
    for entry in dump.get("maps", []):
        if entry["variable"] == variable and entry["file"] != own_file:
            return entry["file"]
    return None


def serves_tls(server: dict) -> bool:
    """A server block with an HTTPS listener (`listen 443 ...` or `... ssl`)."""
    for listen in server.get("listen", []):
        words = listen.replace(":", " ").split()
        if "ssl" in words or "443" in words:
            return True
    return False


def served_elsewhere(dump: dict, names, own_files) -> dict[str, str]:
    """{name: file} for each of `names` a server block outside `own_files` already serves
    over HTTPS. A block that only redirects on port 80, or listens on some other port,
    serves none of what our site does: it is no reason to drop our vhost."""
    found: dict[str, str] = {}
    own = set(own_files)
    for server in dump.get("servers", []):
        if server["file"] in own or not serves_tls(server):
            continue
        for name in names:
            if name in server["names"] and name not in found:
                found[name] = server["file"]
    return found


class NginxDump(FactBase[dict]):
    """nginx's whole loaded config (`nginx -T`), parsed: maps and server blocks per file."""

    def command(self) -> str:
        return _DUMP

    @staticmethod
    def default() -> dict:
        return {"state": "absent", "maps": [], "servers": []}

    def process(self, output: list[str]) -> dict:
        return parse_nginx_dump(output)
