"""`sluice backend`: loads the model, then serves the backend's HTTP API with uvicorn."""

from __future__ import annotations

import logging
import os
import sys

import uvicorn
from pydantic import ValidationError
from pydantic_settings import CliApp

from backend.app import create_app
from backend.settings import BackendSettings

log = logging.getLogger("sluice.backend")


def parse_settings(argv: list[str] | None = None) -> BackendSettings:
    """Settings from flags (kebab-case), then SLUICE_BACKEND_* variables, then defaults."""
    args = sys.argv[1:] if argv is None else argv
    try:
        return CliApp.run(BackendSettings, cli_args=args)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            name = "_".join(str(part) for part in error["loc"])
            flag = "--" + name.replace("_", "-")
            problems.append(f"{flag} / SLUICE_BACKEND_{name.upper()}: {error['msg']}")
        raise SystemExit("sluice backend: invalid settings\n  " + "\n  ".join(problems)) from exc


def main(argv: list[str] | None = None) -> None:
    """Runs the backend until interrupted; SIGTERM drains queued and running requests first."""
    # Before torch loads: OpenMP threads that spin-wait between parallel regions made CPU
    # decoding up to 10x slower whenever another process shared the cores; passive waiting
    # costs little on a quiet machine. An explicit OMP_WAIT_POLICY wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    settings = parse_settings(argv)
    logging.basicConfig(
        level=settings.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    app = create_app(settings)
    log.info(
        "serving on http://%s:%d (engine=%s, batching=%s, max_batch_size=%d, max_wait_ms=%g)",
        settings.host,
        settings.port,
        settings.engine,
        settings.batching,
        settings.max_batch_size,
        settings.max_wait_ms,
    )
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # Bounds how long uvicorn waits for open requests before the batcher's own drain.
        timeout_graceful_shutdown=max(1, int(settings.drain_timeout_s)),
    )
