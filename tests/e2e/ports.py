"""What another host can reach: every TCP port of an address, scanned from a second host.

One scanner for every e2e module (the plans promise "nothing beyond 22/80/443 from
outside"). Non-blocking connects, BATCH at a time; a port counts as open when its connect
completes within WAIT_S. A firewall that drops (ufw's default deny) leaves a batch to time
out, so batches are large: 65535 ports take about four WAIT_S periods, not one per port.
"""

from __future__ import annotations

BATCH = 16384
WAIT_S = 2.0

_SCAN = r"""
import resource, select, socket, sys, time
batch, wait = int(sys.argv[2]), float(sys.argv[3])
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
want = batch + 100
if hard != resource.RLIM_INFINITY and hard < want:
    batch, want = hard - 100, hard
resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
found = []
for start in range(1, 65536, batch):
    pending, poll = {}, select.poll()
    for port in range(start, min(start + batch, 65536)):
        s = socket.socket()
        s.setblocking(False)
        s.connect_ex((sys.argv[1], port))
        pending[s.fileno()] = (s, port)
        poll.register(s, select.POLLOUT)
    deadline = time.time() + wait
    while pending and time.time() < deadline:
        for fd, _ in poll.poll(200):
            s, port = pending.pop(fd)
            poll.unregister(fd)
            if s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                found.append(port)
            s.close()
    for s, _ in pending.values():
        s.close()
print(" ".join(map(str, sorted(found))))
"""


def open_tcp_ports(scanner, address: str) -> list[int]:
    """Every TCP port of `address` that answers `scanner` (a harness Host), sorted."""
    out = scanner.exec(["python3", "-c", _SCAN, address, str(BATCH), str(WAIT_S)], timeout=300).stdout
    return [int(port) for port in out.split()]
