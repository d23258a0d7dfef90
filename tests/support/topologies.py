"""Redis topologies on loopback for the high-availability tests, from the ``redis-server``
binary alone: a Sentinel set (a primary, a replica, three sentinels) and a Redis Cluster (three
primaries with one replica each). Every process is started here and stopped by PID."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
import typing as t
from pathlib import Path

import redis

from tests.support.servers import require_binary
from tests.support.servers import stop
from tests.support.servers import wait_for_port

#: Ports for topology nodes, and their cluster bus ports (+10000): both below the kernel's
#: ephemeral range (32768 and up here), so no outgoing connection takes one between the check
#: and the node's start, as happened with ports from the ephemeral range.
_PORTS = range(20000, 22768)
_taken: set[int] = set()


def quiet_port() -> int:
    """A free port whose ``port + 10000`` is free too, outside the ephemeral range, not handed
    out before by this process."""
    import random

    for _ in range(1000):
        port = random.choice(_PORTS)
        if port not in _taken and _free(port) and _free(port + 10000):
            _taken.add(port)
            return port
    raise RuntimeError(f"no free port pair in {_PORTS.start}-{_PORTS.stop - 1}")


class Node:
    """One ``redis-server`` process (or sentinel) in its own directory."""

    def __init__(self, directory: Path, port: int, args: list[str]) -> None:
        self.directory = directory
        self.port = port
        self.args = args
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self, extra: t.Sequence[str] = ()) -> Node:
        """Start the server (again), with ``extra`` arguments this time only."""
        self.directory.mkdir(parents=True, exist_ok=True)
        log = open(self.directory / "log.txt", "ab")  # noqa: SIM115
        self.process = subprocess.Popen(
            [require_binary("redis-server"), *self.args, *extra],
            cwd=self.directory,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        try:
            wait_for_port(self.port, self.process)
            if self.process.poll() is not None:  # something else answered on the port
                raise RuntimeError(f"redis-server on {self.port} exited; see {log.name}")
        except BaseException:
            self.stop()
            raise
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, not a shutdown."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process is not None:
            stop(self.process)

    def client(self) -> redis.Redis[bytes]:
        return redis.Redis(host="127.0.0.1", port=self.port, socket_timeout=5)


def _server_args(port: int, *extra: str) -> list[str]:
    return [
        *("--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"),
        *("--repl-diskless-sync-delay", "0"),
        *extra,
    ]


def _wait(condition: t.Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(redis.RedisError, OSError):
            if condition():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{what} within {timeout} s")


class SentinelSet:
    """A primary, one replica and three sentinels watching service ``ssecors``."""

    SERVICE = "ssecors"

    def __init__(self, root: Path) -> None:
        self.root = root
        primary, replica = quiet_port(), quiet_port()
        self.primary = Node(root / "primary", primary, _server_args(primary))
        self.replica = Node(
            root / "replica",
            replica,
            _server_args(replica, "--replicaof", "127.0.0.1", str(primary)),
        )
        self.sentinels: list[Node] = []
        for number in range(3):
            port = quiet_port()
            directory = root / f"sentinel{number}"
            directory.mkdir(parents=True, exist_ok=True)
            (directory / "sentinel.conf").write_text(
                f"port {port}\nbind 127.0.0.1\n"
                f"sentinel monitor {self.SERVICE} 127.0.0.1 {primary} 2\n"
                f"sentinel down-after-milliseconds {self.SERVICE} 1000\n"
                f"sentinel failover-timeout {self.SERVICE} 3000\n"
            )
            self.sentinels.append(Node(directory, port, ["sentinel.conf", "--sentinel"]))

    @property
    def url(self) -> str:
        hosts = ",".join(node.address for node in self.sentinels)
        return f"redis+sentinel://{hosts}/{self.SERVICE}"

    def start(self) -> SentinelSet:
        """Start every process; on any failure, stop those that started and raise."""
        try:
            self.primary.start()
            self.replica.start()
            _wait(self._replica_linked, 20, "the replica did not link")
            for sentinel in self.sentinels:
                sentinel.start()
            _wait(self._sentinels_agree, 20, "the sentinels did not find the replica")
        except BaseException:
            self.stop()
            raise
        return self

    def _replica_linked(self) -> bool:
        info = self.replica.client().info("replication")
        return info.get("master_link_status") == "up"

    def _sentinels_agree(self) -> bool:
        for sentinel in self.sentinels:
            replicas = sentinel.client().execute_command("SENTINEL REPLICAS", self.SERVICE)
            if not replicas:
                return False
        return True

    def primary_address(self) -> str:
        host, port = (
            self.sentinels[0]
            .client()
            .execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        )
        return f"{host.decode()}:{port.decode() if isinstance(port, bytes) else port}"

    def node_at(self, address: str) -> Node:
        return next(n for n in (self.primary, self.replica) if n.address == address)

    def fail_over(self) -> tuple[Node, Node]:
        """SIGKILL the primary; wait until the sentinels promoted the replica; restart the old
        primary, which rejoins as a replica. Return (the killed node, the new primary)."""
        old = self.node_at(self.primary_address())
        old.kill()
        _wait(lambda: self.primary_address() != old.address, 30, "no failover")
        new = self.node_at(self.primary_address())
        # The nodes keep nothing on disk, so the old primary comes back empty. Started as a
        # primary, it served an empty keyspace until the sentinels reconfigured it (seconds, or
        # over 20 s on a loaded machine), and a sentinel that still named it sent clients
        # there: new channel generations, and resets, from a split brain the harness made.
        # Restart it the way an operator restarts a node without its data: as a replica.
        host, port = new.address.split(":")
        old.start(["--replicaof", host, port])

        def linked() -> bool:
            with contextlib.closing(old.client()) as client:
                return client.info("replication").get("master_link_status") == "up"

        _wait(linked, 30, "the old primary did not rejoin as a replica")
        return old, new

    def nodes(self) -> list[Node]:
        return [self.primary, self.replica]

    def stop(self) -> None:
        for node in (*self.sentinels, self.replica, self.primary):
            node.stop()


class Cluster:
    """Three primaries with one replica each, created with ``redis-cli --cluster create``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.all: list[Node] = []
        while len(self.all) < 6:
            port = quiet_port()  # its bus port, port + 10000, is free too
            args = _server_args(
                port,
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                f"nodes-{port}.conf",
                "--cluster-node-timeout",
                "1000",
            )
            self.all.append(Node(root / f"node{port}", port, args))

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(node.address for node in self.all[:2])

    def start(self) -> Cluster:
        """Start the six nodes and create the cluster; on any failure, stop every node that
        started and raise (with ``redis-cli``'s output when it is what failed)."""
        try:
            for node in self.all:
                node.start()
            created = subprocess.run(
                [
                    require_binary("redis-cli"),
                    "--cluster",
                    "create",
                    *(node.address for node in self.all),
                    "--cluster-replicas",
                    "1",
                    "--cluster-yes",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
            if created.returncode != 0:
                raise RuntimeError(
                    f"redis-cli --cluster create failed: {created.stdout[-2000:]}"
                    f"{created.stderr[-2000:]}"
                )
            _wait(self._ok, 30, "the cluster did not come up")
            _wait(self._replicas_linked, 30, "the replicas did not link to their primaries")
        except BaseException:
            self.stop()
            raise
        return self

    def _replicas_linked(self) -> bool:
        roles = [node.client().info("replication") for node in self.all]
        replicas = [info for info in roles if info.get("role") == "slave"]
        return len(replicas) == 3 and all(i.get("master_link_status") == "up" for i in replicas)

    def _ok(self) -> bool:
        for node in self.all:
            if node.process is None or node.process.poll() is not None:
                continue
            info = node.client().cluster("INFO")
            if info.get("cluster_state") != "ok":
                return False
        return True

    def primaries(self) -> list[Node]:
        found = []
        for node in self.all:
            if node.process is None or node.process.poll() is not None:
                continue
            with contextlib.suppress(redis.RedisError, OSError):
                if node.client().info("replication").get("role") == "master":
                    found.append(node)
        return found

    def fail_over(self, victim: Node) -> Node:
        """SIGKILL the primary ``victim``; wait until its replica took over and the cluster is
        ok; restart ``victim``, which rejoins as a replica. Return the new primary."""
        before = {node.address for node in self.primaries()}
        victim.kill()

        def promoted() -> bool:
            now = {node.address for node in self.primaries()}
            return len(now) == 3 and victim.address not in now and self._ok()

        _wait(promoted, 30, "no replica was promoted")
        (new,) = [n for n in self.primaries() if n.address not in before]
        victim.start()
        _wait(
            lambda: victim.client().info("replication").get("master_link_status") == "up",
            30,
            "the old primary did not rejoin as a replica",
        )
        return new

    def stop(self) -> None:
        for node in self.all:
            node.stop()


def _free(port: int) -> bool:
    import socket

    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def listening_connections(nodes: t.Iterable[Node]) -> dict[str, int]:
    """Connections named ``ssecors-listen-<pid>`` on the nodes, per worker pid."""
    counts: dict[str, int] = {}
    for node in nodes:
        if node.process is None or node.process.poll() is not None:
            continue
        for connection in node.client().client_list():
            name = str(connection.get("name", ""))
            if name.startswith("ssecors-listen-"):
                counts[name] = counts.get(name, 0) + 1
    return counts
