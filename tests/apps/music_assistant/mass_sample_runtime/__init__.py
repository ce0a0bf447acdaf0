"""Stand-in for Music Assistant 2.3.0's `[server]` extra (aiorun + ifaddr), stdlib only.

`run(coro)` behaves like aiorun 2024.8.1's `run`: the loop runs forever; an exception
raised by the main coroutine is logged and does not stop it. `get_ips()` reads the
interface addresses over netlink (RTM_GETADDR), as ifaddr 0.2.0 does through glibc's
getifaddrs(): a sandbox without AF_NETLINK makes it raise OSError(97).
"""

import asyncio
import logging
import signal
import socket
import struct

LOGGER = logging.getLogger("aiorun")
RTM_GETADDR, RTM_NEWADDR, NLMSG_DONE, NLMSG_ERROR = 22, 20, 3, 2
NLM_F_REQUEST, NLM_F_DUMP = 1, 0x300
IFA_ADDRESS, IFA_LOCAL = 1, 2


def get_ips(include_ipv6: bool = False) -> set[str]:
    """Addresses of all interfaces, read from the kernel over an AF_NETLINK socket."""
    family = socket.AF_UNSPEC if include_ipv6 else socket.AF_INET
    with socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, socket.NETLINK_ROUTE) as sock:
        sock.bind((0, 0))
        request = struct.pack("=LHHLL", 16 + 8, RTM_GETADDR, NLM_F_REQUEST | NLM_F_DUMP, 1, 0)
        sock.send(request + struct.pack("=BBBBI", family, 0, 0, 0, 0))
        ips: set[str] = set()
        while True:
            data = sock.recv(65536)
            offset = 0
            while offset < len(data):
                length, kind = struct.unpack_from("=LH", data, offset)
                if kind == NLMSG_DONE or length == 0:
                    return ips
                if kind == NLMSG_ERROR:
                    raise OSError("netlink error")
                if kind == RTM_NEWADDR:
                    fam = data[offset + 16]
                    pos = offset + 16 + 8
                    while pos < offset + length:
                        alen, atype = struct.unpack_from("=HH", data, pos)
                        if alen < 4:
                            break
                        if atype in (IFA_ADDRESS, IFA_LOCAL):
                            raw = data[pos + 4:pos + alen]
                            ips.add(socket.inet_ntop(socket.AF_INET if fam == socket.AF_INET else socket.AF_INET6, raw))
                        pos += (alen + 3) & ~3
                offset += (length + 3) & ~3


def run(coro, shutdown_callback=None) -> None:
    """Run `coro`, then keep the loop running until SIGTERM/SIGINT (aiorun semantics)."""
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    stop = asyncio.Event()

    async def main():
        try:
            await coro
        except Exception:  # aiorun: logged, the loop keeps running
            LOGGER.exception("Unhandled exception in the main coroutine; the loop keeps running")
        await stop.wait()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        loop.run_until_complete(main())
        if shutdown_callback:
            shutdown_callback(loop)
    finally:
        loop.close()
