"""Start-up checks that turn the usual misconfigurations into one line naming cause and fix,
instead of a traceback or uvicorn's bare "exited with code 3".

Checks run before anything slow (loading a model, an embedder), so a mistake costs a second.
"""

from __future__ import annotations

import errno
import socket
import sys
from pathlib import Path
from typing import NoReturn

from backend.errors import StartupError

# Distinct from a crash (1) and from argparse's usage errors (2): `sluice serve` uses it to
# tell that its backend already said why it could not start.
STARTUP_FAILURE = 3


def exit_on(error: StartupError, *, prog: str) -> NoReturn:
    """Prints the one line and exits with STARTUP_FAILURE."""
    print(f"{prog}: {error}", file=sys.stderr, flush=True)
    raise SystemExit(STARTUP_FAILURE)


def listen(host: str, port: int, *, flag: str = "--port") -> socket.socket:
    """A listening TCP socket on host:port, bound here so that uvicorn serves exactly the
    port that was checked (no window for another process to take it in between)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(
            f"cannot listen on {host}:{port}: unknown address ({exc.strerror})",
            "Pass an address of this machine to --host, such as 127.0.0.1 or 0.0.0.0",
        ) from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise _bind_error(host, port, flag, exc) from None
    return sock


def _bind_error(host: str, port: int, flag: str, exc: OSError) -> StartupError:
    if exc.errno == errno.EADDRINUSE:
        return StartupError(
            f"port {port} on {host} is already in use",
            f"Stop the process listening there, or pass a free port to {flag}",
        )
    if exc.errno == errno.EACCES:
        return StartupError(
            f"not allowed to listen on port {port} on {host}",
            f"Pass a port above 1023 to {flag}, or run with the right to bind low ports",
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return StartupError(
            f"cannot listen on {host}:{port}: {host} is not an address of this machine",
            "Pass an address of this machine to --host, such as 127.0.0.1 or 0.0.0.0",
        )
    return StartupError(
        f"cannot listen on {host}:{port}: {exc.strerror}", f"Check --host and {flag}"
    )


def port_is_free(host: str, port: int) -> bool:
    """Whether host:port can be bound right now (for a port a child process will bind)."""
    try:
        listen(host, port).close()
    except StartupError:
        return False
    return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port the system reports free on host."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def check_model(model: str) -> None:
    """Refuses a model that names a local folder which is not there or holds no model.
    Hub ids are left to the loader (they may be cached, or downloadable)."""
    from backend.demo_model import PRESETS  # imports torch: only where a model is loaded

    if model in PRESETS:
        return
    path = Path(model).expanduser()
    looks_local = model.startswith(("/", ".", "~")) or path.exists()
    if not looks_local:
        return
    presets = ", ".join(sorted(PRESETS))
    fix = f"Pass --model a folder holding a Hugging Face model, a hub id, or a preset ({presets})"
    if not path.is_dir():
        raise StartupError(f"model folder {model} does not exist", fix)
    if not (path / "config.json").is_file():
        raise StartupError(
            f"model folder {model} holds no config.json, so it is not a Hugging Face model",
            fix,
        )
