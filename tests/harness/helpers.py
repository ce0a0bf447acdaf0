"""DNS (dnsmasq) and ACME (pebble) services inside the cluster's helper container.

Both run in one systemd container built from the `helper` image: one boot instead of two.

DNS: dnsmasq answers the records the test sets (an extra hosts file, reloaded with
SIGHUP, which also clears dnsmasq's cache) and forwards every other name to Docker's
embedded resolver, so apt and pip inside the hosts keep working. Hosts are started with
`--dns <helper ip>`: their 127.0.0.11 resolver forwards unknown names to dnsmasq.

ACME: Debian's pebble ships no config or certificate, so we make a throwaway CA and a
listener certificate (SAN = helper IP and name) with openssl inside the helper, and run
pebble as a systemd unit with the settings from the test-hosts notes:
PEBBLE_WFE_NONCEREJECT=0 (otherwise 5 % of nonces are rejected on purpose and certbot fails
at random), PEBBLE_VA_NOSLEEP=1, and -dnsserver <dnsmasq> so validation sees test records.
"""

from __future__ import annotations

from ._util import HarnessError, docker

DNS_HOSTS_FILE = "/etc/harness/dns-hosts"
PEBBLE_DIR = "/etc/pebble"
ACME_PORT = 14000
ACME_MGMT_PORT = 15000

DNSMASQ_CONF = f"""# written by tests/harness
addn-hosts={DNS_HOSTS_FILE}
# a name queried before the test sets it must not stay cached as NXDOMAIN
no-negcache
log-queries
"""

# Minimal DNS A-record client (stdlib only) run with the helper's python3, so waiting for a
# record works even where the harness machine cannot reach container IPs (Docker Desktop).
# usage: query NAME SERVER | wait NAME SERVER WANT|-  ABSENT|-  TIMEOUT
DNS_PY = r"""
import random, socket, struct, sys, time

def query(name, server):
    q = struct.pack(">HHHHHH", random.randrange(65536), 0x0100, 1, 0, 0, 0)
    q += b"".join(bytes([len(p)]) + p.encode() for p in name.strip(".").split(".")) + b"\0"
    q += struct.pack(">HH", 1, 1)
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    s.sendto(q, (server, 53))
    r = s.recv(4096)
    count, i, found = struct.unpack(">H", r[6:8])[0], 12, []
    while r[i]:
        i += r[i] + 1
    i += 5
    for _ in range(count):
        if r[i] & 0xC0 == 0xC0:
            i += 2
        else:
            while r[i]:
                i += r[i] + 1
            i += 1
        rtype, _, _, rdlen = struct.unpack(">HHIH", r[i:i + 10])
        i += 10
        if rtype == 1:
            found.append(socket.inet_ntoa(r[i:i + 4]))
        i += rdlen
    return found

mode, name, server = sys.argv[1:4]
if mode == "query":
    print(" ".join(query(name, server)))
    sys.exit(0)
want, absent, deadline = sys.argv[4], sys.argv[5], time.time() + float(sys.argv[6])
answer = "no answer"
while time.time() < deadline:
    try:
        answer = query(name, server)
        if (want == "-" or want in answer) and (absent == "-" or absent not in answer):
            sys.exit(0)
    except OSError as exc:
        answer = repr(exc)
    time.sleep(0.1)
sys.exit(f"last answer: {answer}")
"""

PEBBLE_SETUP_SH = r"""
set -eu
mkdir -p "$PEBBLE_DIR" && cd "$PEBBLE_DIR"
cat > ca.cnf <<EOF
[req]
distinguished_name = dn
x509_extensions = v3_ca
prompt = no
[dn]
CN = infra-test pebble listener CA $RUN_ID
[v3_ca]
basicConstraints = critical,CA:TRUE
keyUsage = critical,keyCertSign,cRLSign
subjectKeyIdentifier = hash
EOF
cat > leaf.ext <<EOF
subjectAltName = IP:$HELPER_IP,DNS:$HELPER_NAME,DNS:localhost,IP:127.0.0.1
basicConstraints = critical,CA:FALSE
keyUsage = critical,digitalSignature
extendedKeyUsage = serverAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
EOF
openssl req -x509 -config ca.cnf -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
    -days 30 -keyout ca.key -out ca.pem 2>/dev/null
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$HELPER_NAME" \
    -keyout key.pem -out leaf.csr 2>/dev/null
openssl x509 -req -in leaf.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
    -extfile leaf.ext -out cert.pem 2>/dev/null
cat > config.json <<EOF
{"pebble": {"listenAddress": "0.0.0.0:$ACME_PORT", "managementListenAddress": "0.0.0.0:$ACME_MGMT_PORT",
  "certificate": "$PEBBLE_DIR/cert.pem", "privateKey": "$PEBBLE_DIR/key.pem",
  "httpPort": 80, "tlsPort": 443, "ocspResponderURL": "", "externalAccountBindingRequired": false}}
EOF
cat > /etc/systemd/system/pebble.service <<EOF
[Unit]
Description=Pebble ACME test server (tests/harness)
After=network.target dnsmasq.service
[Service]
Environment=PEBBLE_WFE_NONCEREJECT=0 PEBBLE_VA_NOSLEEP=1
ExecStart=/usr/bin/pebble -config $PEBBLE_DIR/config.json -dnsserver $HELPER_IP:53
Restart=on-failure
[Install]
WantedBy=multi-user.target
EOF
systemctl daemon-reload
systemctl start pebble.service
for i in $(seq 1 100); do
    curl -sf --cacert ca.pem -o /dev/null "https://$HELPER_IP:$ACME_PORT/dir" && exit 0
    sleep 0.1
done
echo "pebble did not answer on https://$HELPER_IP:$ACME_PORT/dir" >&2
journalctl -u pebble.service -n 20 --no-pager >&2
exit 1
"""


def _exec(cid: str, *args: str, input: str | None = None, env: dict[str, str] | None = None,
          timeout: float = 60, what: str) -> str:
    envargs = [a for k, v in (env or {}).items() for a in ("-e", f"{k}={v}")]
    interactive = ["-i"] if input is not None else []
    return docker("exec", *interactive, *envargs, cid, *args, input=input, timeout=timeout,
                  what=what).stdout


# ---------------------------------------------------------------- DNS

def setup_dns(cid: str) -> None:
    """Point dnsmasq at our records file and restart it (it booted with defaults)."""
    script = (f"set -e; mkdir -p /etc/harness; : > {DNS_HOSTS_FILE}; chmod 644 {DNS_HOSTS_FILE}; "
              "cat > /etc/dnsmasq.d/harness.conf; systemctl restart dnsmasq.service")
    _exec(cid, "sh", "-c", script, input=DNSMASQ_CONF, what="configure dnsmasq in the helper")


def write_records(cid: str, records: dict[str, str]) -> None:
    """Replace dnsmasq's records and reload it (SIGHUP re-reads them, drops its cache)."""
    body = "".join(f"{ip} {name}\n" for name, ip in sorted(records.items()))
    script = f"cat > {DNS_HOSTS_FILE}.new && mv {DNS_HOSTS_FILE}.new {DNS_HOSTS_FILE} && " \
             f"chmod 644 {DNS_HOSTS_FILE} && systemctl reload dnsmasq.service"
    _exec(cid, "sh", "-c", script, input=body, what="update dnsmasq records")


def wait_for_answer(cid: str, server: str, name: str, *, want: str | None = None,
                    absent: str | None = None, timeout: float = 10) -> None:
    """Wait until dnsmasq's answer for `name` contains `want` and lacks `absent`."""
    try:
        _exec(cid, "python3", "-c", DNS_PY, "wait", name, server, want or "-", absent or "-",
              str(timeout), timeout=timeout + 15, what=f"DNS answer for {name}")
    except HarnessError as exc:
        raise HarnessError(f"dnsmasq at {server} did not answer {name} with "
                           f"{want or 'anything but ' + str(absent)} within {timeout:.0f}s: {exc}") from exc


def query(cid: str, server: str, name: str) -> list[str]:
    """A records dnsmasq currently returns for `name` (asked from inside the helper)."""
    return _exec(cid, "python3", "-c", DNS_PY, "query", name, server,
                 what=f"DNS query {name}").split()


# ---------------------------------------------------------------- ACME

def setup_acme(cid: str, helper_ip: str, helper_name: str, run_id: str) -> str:
    """Create pebble's listener CA/cert, start pebble; return the CA PEM (listener trust)."""
    env = {"PEBBLE_DIR": PEBBLE_DIR, "HELPER_IP": helper_ip, "HELPER_NAME": helper_name,
           "RUN_ID": run_id, "ACME_PORT": str(ACME_PORT), "ACME_MGMT_PORT": str(ACME_MGMT_PORT)}
    _exec(cid, "sh", "-c", PEBBLE_SETUP_SH, env=env, timeout=60, what="start pebble in the helper")
    return _exec(cid, "cat", f"{PEBBLE_DIR}/ca.pem", what="read pebble listener CA")


def acme_root_pem(cid: str) -> str:
    """The root that signs certificates pebble issues (changes at every pebble start)."""
    url = f"https://127.0.0.1:{ACME_MGMT_PORT}/roots/0"
    return _exec(cid, "curl", "-sSf", "--cacert", f"{PEBBLE_DIR}/ca.pem", url,
                 what="fetch pebble's issuing root (/roots/0)")
