"""Throwaway Redis topologies started from the machine's redis-server: a three-master Cluster,
and a master with a replica watched by one Sentinel. Each lives in a temporary directory on
spare ports and is torn down whole (processes killed, directory removed), even when its
start-up fails half way.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis

SENTINEL_SERVICE = "sluicetest"
START_TIMEOUT_S = 20.0


def spare_ports(n: int) -> list[int]:
    """n distinct ports that were free a moment ago (all held open together, then released)."""
    with contextlib.ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(n)]
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [int(s.getsockname()[1]) for s in socks]


def redis_server_binary() -> str:
    """The machine's redis-server; the tests skip only when it is truly absent."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.skip("redis-server is not installed")
    return binary


def wait_until(check: Callable[[], bool], what: str, timeout_s: float = START_TIMEOUT_S) -> None:
    """Polls `check` (errors count as not yet) until it holds, or fails naming `what`."""
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except (redis.RedisError, OSError) as exc:
            last_error = exc
        time.sleep(0.05)
    raise RuntimeError(f"timed out waiting for {what} (last error: {last_error})")


def plain_client(port: int) -> redis.Redis:
    return redis.Redis(host="127.0.0.1", port=port, socket_timeout=2, socket_connect_timeout=2)


@dataclass
class Processes:
    """redis-server processes sharing one temporary directory; `close` removes all of it."""

    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="sluice-redis-")))
    procs: dict[int, subprocess.Popen[bytes]] = field(default_factory=dict)
    commands: dict[int, list[str]] = field(default_factory=dict)

    def start(self, port: int, *args: str, config: str | None = None) -> None:
        """Starts redis-server on `port` in a directory of its own and waits for PING."""
        workdir = self.root / str(port)
        workdir.mkdir()
        command = [redis_server_binary()]
        if config is not None:
            (workdir / "redis.conf").write_text(config)
            command.append(str(workdir / "redis.conf"))
        command += [
            "--port", str(port),
            "--bind", "127.0.0.1",
            "--dir", str(workdir),
            "--save", "",
            "--appendonly", "no",
            *args,
        ]  # fmt: skip
        self.commands[port] = command
        self.restart(port)

    def restart(self, port: int) -> None:
        """Starts a stopped server again with its first command line, in its old directory."""
        with (self.root / str(port) / "server.log").open("ab") as log:
            self.procs[port] = subprocess.Popen(
                self.commands[port], stdout=log, stderr=subprocess.STDOUT
            )
        with plain_client(port) as client:
            wait_until(lambda: bool(client.ping()), f"redis-server on port {port}")

    def stop(self, port: int) -> None:
        proc = self.procs.pop(port, None)
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def close(self) -> None:
        for port in list(self.procs):
            self.stop(port)
        shutil.rmtree(self.root, ignore_errors=True)


@dataclass(frozen=True)
class LocalCluster:
    """A running Redis Cluster: `url` is what REDIS_URL would say."""

    processes: Processes
    ports: list[int]

    @property
    def url(self) -> str:
        return f"redis+cluster://127.0.0.1:{self.ports[0]}"

    def wait_ok(self) -> None:
        """Until every node reports cluster_state:ok and knows all the others."""

        def settled(port: int) -> bool:
            with plain_client(port) as client:
                info = client.execute_command("CLUSTER", "INFO")
            text = info.decode() if isinstance(info, bytes) else str(info)
            return "cluster_state:ok" in text and f"cluster_known_nodes:{len(self.ports)}" in text

        for port in self.ports:
            wait_until(lambda port=port: settled(port), f"cluster_state:ok on port {port}")  # type: ignore[misc]

    def stop(self) -> None:
        """Stops every node (their nodes.conf stays, so `restart` brings the same cluster)."""
        for port in self.ports:
            self.processes.stop(port)

    def restart(self) -> None:
        """Starts the stopped nodes again: same slots, no data (nothing is persisted)."""
        for port in self.ports:
            self.processes.restart(port)
        self.wait_ok()


@contextlib.contextmanager
def redis_cluster(masters: int = 3) -> Iterator[LocalCluster]:
    """A Redis Cluster of `masters` masters and no replicas, slots spread evenly."""
    processes = Processes()
    try:
        ports = spare_ports(2 * masters)
        client_ports, bus_ports = ports[:masters], ports[masters:]
        for port, bus in zip(client_ports, bus_ports, strict=True):
            processes.start(
                port,
                "--cluster-enabled", "yes",
                "--cluster-port", str(bus),
                "--cluster-config-file", "nodes.conf",
                "--cluster-node-timeout", "5000",
            )  # fmt: skip
        subprocess.run(
            [
                shutil.which("redis-cli") or "redis-cli",
                "--cluster", "create",
                *(f"127.0.0.1:{p}" for p in client_ports),
                "--cluster-replicas", "0",
                "--cluster-yes",
            ],
            check=True,
            capture_output=True,
            timeout=START_TIMEOUT_S,
        )  # fmt: skip
        cluster = LocalCluster(processes=processes, ports=client_ports)
        cluster.wait_ok()
        yield cluster
    finally:
        processes.close()


@dataclass(frozen=True)
class LocalSentinel:
    """A master, one replica and a Sentinel watching them (quorum 1)."""

    processes: Processes
    master_port: int
    replica_port: int
    sentinel_port: int

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{SENTINEL_SERVICE}/0"

    def master_address(self) -> tuple[str, int]:
        with plain_client(self.sentinel_port) as client:
            host, port = client.sentinel_get_master_addr_by_name(SENTINEL_SERVICE)
        return (host.decode() if isinstance(host, bytes) else host), int(port)

    def role(self, port: int) -> str:
        with plain_client(port) as client:
            role = client.execute_command("ROLE")[0]
        return role.decode() if isinstance(role, bytes) else str(role)

    def crash_master(self) -> int:
        """Kills the master and waits until Sentinel has promoted the replica (about 2 s:
        1 s to call the master down, then the fail-over); returns the new master's port."""
        self.processes.stop(self.master_port)
        new = self.replica_port
        wait_until(lambda: self.master_address()[1] == new, "Sentinel to name the new master")
        wait_until(lambda: self.role(new) == "master", "the replica's promotion")
        return new


@contextlib.contextmanager
def redis_sentinel() -> Iterator[LocalSentinel]:
    """A master with one in-sync replica, and a Sentinel that knows both."""
    processes = Processes()
    try:
        master, replica, sentinel = spare_ports(3)
        processes.start(master, "--repl-diskless-sync-delay", "0")
        processes.start(replica, "--replicaof", "127.0.0.1", str(master))

        def replica_online() -> bool:
            with plain_client(master) as client:
                info = client.info("replication")
            return bool(info.get("slave0", {}).get("state") == "online")

        wait_until(replica_online, "the replica to finish its first sync")
        processes.start(
            sentinel,
            "--sentinel",
            config=(
                f"sentinel monitor {SENTINEL_SERVICE} 127.0.0.1 {master} 1\n"
                f"sentinel down-after-milliseconds {SENTINEL_SERVICE} 1000\n"
                f"sentinel failover-timeout {SENTINEL_SERVICE} 10000\n"
            ),
        )

        def sentinel_sees_replica() -> bool:
            with plain_client(sentinel) as client:
                replicas = client.sentinel_slaves(SENTINEL_SERVICE)
            return any(
                int(r["port"]) == replica and r.get("master-link-status") == "ok" for r in replicas
            )

        wait_until(sentinel_sees_replica, "Sentinel to discover the replica")
        yield LocalSentinel(
            processes=processes,
            master_port=master,
            replica_port=replica,
            sentinel_port=sentinel,
        )
    finally:
        processes.close()
