"""Hosts of a test's own: Linux network namespaces joined to this machine by veth
pairs, with their own addresses, and the link between them cut, healed or slowed
with ``tc netem``.

Only addresses created here are ever used: each host gets a /30 of
``10.213.0.0/16`` (``NETWORK``) that no interface or route of this machine, nor of
any namespace, uses yet; the host end of the pair is ``.1`` (where the test's own
PostgreSQL listens), the namespace end ``.2``. Names carry a per-run tag, so two
runs never collide, and ``Hosts.destroy`` removes everything it made (deleting
a namespace deletes its end of the pair and with it the pair).

A cut is ``ip link set down`` on the host's end of the link, its cable pulled:
nobody answers with a reset, the host's sockets keep retransmitting and the
server's end sees a dead peer (keepalives and retransmissions unanswered) until
``tcp_user_timeout`` and the keepalives say so. (``tc netem loss 100%`` would
be the other way; this machine's kernel has no ``netem``, nor iptables.) A slow
link is a proxy in the namespace that holds each packet the host sends
(``delayed_port``), for the same reason.

Needs root, iproute2 and util-linux (``ip``, ``unshare``); ``missing()`` names
what is absent. Standard library only.

    python -m tools.netns delay LISTEN_HOST:PORT TO_HOST:PORT MILLISECONDS
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import random
import secrets
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from subprocess import Popen

NETWORK = ipaddress.ip_network("10.213.0.0/16")


class NetnsError(Exception):
    """A namespace, link or qdisc could not be set up; the message says why."""


def missing() -> list[str]:
    """What this machine lacks to run hosts in namespaces (empty: nothing)."""
    lacking = []
    if os.geteuid() != 0:
        lacking.append("root (network namespaces, veth and tc need it)")
    for program in ("ip", "unshare"):
        if shutil.which(program) is None:
            lacking.append(f"the `{program}` program (iproute2 / util-linux)")
    if not lacking:
        probe = subprocess.run(
            ["ip", "netns", "list"], capture_output=True, text=True, check=False
        )
        if probe.returncode:
            lacking.append(f"`ip netns` ({probe.stderr.strip()})")
    return lacking


def _run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(args, capture_output=True, text=True, check=False)
    if check and result.returncode:
        raise NetnsError(f"{' '.join(args)}: {result.stderr.strip()}")
    return result


def _used_networks() -> list[ipaddress.IPv4Network]:
    """Every IPv4 network of this machine's and every namespace's addresses and
    routes."""
    outputs = [
        _run("ip", "-4", "-o", "addr", "show").stdout,
        _run("ip", "-4", "route", "show", "table", "all").stdout,
    ]
    for line in _run("ip", "netns", "list").stdout.splitlines():
        name = line.split()[0]
        for what in (("addr", "show"), ("route", "show", "table", "all")):
            outputs.append(
                _run("ip", "-n", name, "-4", "-o", *what, check=False).stdout
            )
    used = []
    for text in outputs:
        for word in text.split():
            try:
                used.append(ipaddress.ip_network(word, strict=False))
            except ValueError:
                continue
    return [n for n in used if isinstance(n, ipaddress.IPv4Network)]


@dataclass(frozen=True)
class Host:
    """One namespace and its link: ``address`` inside, ``gateway`` outside."""

    name: str  # the namespace, and the host name its processes see
    netns: str
    veth_outside: str
    veth_inside: str
    subnet: ipaddress.IPv4Network

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def address(self) -> str:
        return str(self.subnet.network_address + 2)

    def command(self, argv: list[str]) -> list[str]:
        """``argv`` run inside the namespace, with a host name of its own (a UTS
        namespace), as on another machine."""
        return [
            "ip", "netns", "exec", self.netns,
            "unshare", "--uts",
            "sh", "-c", 'hostname "$0" && exec "$@"', self.name, *argv,
        ]  # fmt: skip

    def cut(self) -> None:
        """Pull the host's cable: its end of the link goes down until ``heal``."""
        _run("ip", "-n", self.netns, "link", "set", self.veth_inside, "down")

    def heal(self) -> None:
        _run("ip", "-n", self.netns, "link", "set", self.veth_inside, "up")

    def delayed_port(self, *, port: int, to: str, milliseconds: int) -> Popen[bytes]:
        """A proxy on the namespace's own loopback ``127.0.0.1:port`` to ``to``
        (``host:port``, across the link) that holds what the host sends for
        ``milliseconds``: a link whose every round trip takes that much longer.
        (This machine's kernel has no ``netem``; the proxy stands in for ``tc
        qdisc add dev ... netem delay``.)"""
        return subprocess.Popen(
            [
                "ip", "netns", "exec", self.netns,
                sys.executable, "-m", "tools.netns", "delay",
                f"127.0.0.1:{port}", to, str(milliseconds),
            ],
            cwd=Path(__file__).resolve().parent.parent,
            start_new_session=True,
        )  # fmt: skip


@dataclass
class Hosts:
    """The namespaces of one run; ``destroy`` (idempotent) removes them all."""

    tag: str = field(default_factory=lambda: secrets.token_hex(3))
    hosts: list[Host] = field(default_factory=list)

    def add(self, name: str) -> Host:
        subnet = self._free_subnet()
        number = len(self.hosts)
        host = Host(
            name=name,
            netns=f"kc-{self.tag}-{number}",
            veth_outside=f"kc{self.tag}{number}o",  # at most 15 characters
            veth_inside=f"kc{self.tag}{number}i",
            subnet=subnet,
        )
        self.hosts.append(host)  # before creating: destroy removes half-made ones
        _run("ip", "netns", "add", host.netns)
        _run(
            "ip", "link", "add", host.veth_outside,
            "type", "veth", "peer", "name", host.veth_inside,
        )  # fmt: skip
        _run("ip", "link", "set", host.veth_inside, "netns", host.netns)
        prefix = subnet.prefixlen
        _run("ip", "addr", "add", f"{host.gateway}/{prefix}", "dev", host.veth_outside)
        _run("ip", "link", "set", host.veth_outside, "up")
        inside = ("ip", "-n", host.netns)
        _run(
            *inside, "addr", "add", f"{host.address}/{prefix}", "dev", host.veth_inside
        )
        _run(*inside, "link", "set", host.veth_inside, "up")
        _run(*inside, "link", "set", "lo", "up")
        return host

    def destroy(self) -> None:
        for host in self.hosts:
            # The processes in it first: a namespace lives on while one runs.
            pids = _run("ip", "netns", "pids", host.netns, check=False).stdout.split()
            for pid in pids:
                with contextlib.suppress(ProcessLookupError, ValueError):
                    os.kill(int(pid), 9)
            _run("ip", "netns", "del", host.netns, check=False)
            _run("ip", "link", "del", host.veth_outside, check=False)
        self.hosts.clear()

    def _free_subnet(self) -> ipaddress.IPv4Network:
        used = _used_networks()
        mine = [h.subnet for h in self.hosts]
        candidates: list[ipaddress.IPv4Network] = list(
            ipaddress.IPv4Network(NETWORK).subnets(new_prefix=30)
        )
        random.shuffle(candidates)
        for subnet in candidates:
            if not any(subnet.overlaps(other) for other in [*used, *mine]):
                return subnet
        raise NetnsError(f"no free /30 left in {NETWORK}")


# --- the delaying proxy ----------------------------------------------------------


async def _pipe(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float
) -> None:
    """Copy ``reader`` to ``writer``, each chunk ``delay`` seconds late, in order."""
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[tuple[float, bytes]] = asyncio.Queue()

    async def feed() -> None:
        while True:
            data = await reader.read(65536)
            await chunks.put((loop.time() + delay, data))
            if not data:
                return

    async def send() -> None:
        while True:
            due, data = await chunks.get()
            wait = due - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            if not data:
                with contextlib.suppress(OSError):
                    writer.write_eof()
                return
            writer.write(data)
            await writer.drain()

    try:
        await asyncio.gather(feed(), send())
    except (OSError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def _delay_proxy(listen: str, to: str, milliseconds: int) -> None:
    to_host, to_port = to.rsplit(":", 1)

    async def connection(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(to_host, int(to_port))
        except OSError:
            writer.close()
            return
        await asyncio.gather(
            _pipe(reader, up_writer, milliseconds / 1000),
            _pipe(up_reader, writer, 0.0),
        )

    host, port = listen.rsplit(":", 1)
    server = await asyncio.start_server(connection, host, int(port))
    async with server:
        await server.serve_forever()


def wait_for_port(host: Host, port: int, timeout: float = 10.0) -> None:
    """Until something listens on the namespace's ``127.0.0.1:port``."""
    deadline = time.monotonic() + timeout
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"
    while time.monotonic() < deadline:
        done = subprocess.run(
            ["ip", "netns", "exec", host.netns, sys.executable, "-c", probe],
            capture_output=True,
            check=False,
        )
        if done.returncode == 0:
            return
        time.sleep(0.1)
    raise NetnsError(f"nothing listens on 127.0.0.1:{port} in {host.netns}")


if __name__ == "__main__":
    if len(sys.argv) != 5 or sys.argv[1] != "delay":
        raise SystemExit(__doc__)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_delay_proxy(sys.argv[2], sys.argv[3], int(sys.argv[4])))
