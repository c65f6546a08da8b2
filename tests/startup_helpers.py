"""Running `sluice` commands that must fail at start-up, and checking how they fail."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from backend.startup import STARTUP_FAILURE


@dataclass(frozen=True)
class Failed:
    """A finished command: its exit code and what it printed on stderr."""

    code: int
    stderr: str

    def the_line(self) -> str:
        """The one line the command printed; fails the test on more, fewer or a traceback."""
        assert "Traceback" not in self.stderr, self.stderr
        lines = [line for line in self.stderr.splitlines() if line.strip()]
        assert len(lines) == 1, self.stderr
        return lines[0]


def run_sluice(*args: str, timeout_s: float = 120, env: dict[str, str] | None = None) -> Failed:
    """Runs `sluice ARGS` (quiet logs) to its end; it must exit with STARTUP_FAILURE."""
    environment = {**os.environ, **(env or {})}
    environment.pop("REDIS_URL", None)
    proc = subprocess.run(
        [sys.executable, "-m", "gateway.cli", *args, "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        env=environment,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == STARTUP_FAILURE, (proc.returncode, proc.stderr[-3000:])
    return Failed(proc.returncode, proc.stderr)


@contextmanager
def taken_port(port: int = 0) -> Iterator[int]:
    """A loopback port (any, or the one given) that something listens on for the duration."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", port))
        sock.listen(1)
        yield int(sock.getsockname()[1])


@contextmanager
def next_port_taken() -> Iterator[int]:
    """A free loopback port P whose successor P+1 something listens on for the duration."""
    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            port = int(probe.getsockname()[1])
        holder = socket.socket()
        try:
            holder.bind(("127.0.0.1", port + 1))
        except OSError:  # P+1 is someone else's right now: try another P
            holder.close()
            continue
        with holder:
            holder.listen(1)
            yield port
        return
    raise RuntimeError("no free port whose successor could be taken")
