"""The `sluice` command: serve (everything on one machine), gateway, backend, stats."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import logging
import os
import secrets
import signal
import socket
import subprocess
import sys
import threading
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

import httpx
import uvicorn

from backend.errors import StartupError
from backend.startup import STARTUP_FAILURE, exit_on, free_port, listen, port_is_free
from gateway.app import create_app
from gateway.settings import GatewaySettings
from gateway.startup import check_embedding_model, check_keys, check_redis, load_settings
from gateway.table import render_stats

log = logging.getLogger("sluice")

_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _flag_type(annotation: Any) -> Any:
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType) and len(args) == 1:
        return _flag_type(args[0])
    if origin is typing.Annotated:
        return _flag_type(args[0])
    if origin is typing.Literal:
        return str
    if annotation in (int, float):
        return annotation
    return str


def add_settings_flags(parser: argparse.ArgumentParser, *, skip: Sequence[str] = ()) -> None:
    """One flag per GatewaySettings field; flags left out keep the environment's value."""
    for name, field in GatewaySettings.model_fields.items():
        if name in skip:
            continue
        flag = "--" + name.replace("_", "-")
        help_text = f"{field.description} [env SLUICE_GATEWAY_{name.upper()}]"
        if field.annotation is bool:
            parser.add_argument(
                flag, action=argparse.BooleanOptionalAction, default=argparse.SUPPRESS,
                help=help_text,
            )  # fmt: skip
        else:
            parser.add_argument(
                flag, type=_flag_type(field.annotation), default=argparse.SUPPRESS, help=help_text
            )


def settings_from(args: argparse.Namespace) -> GatewaySettings:
    """Settings from the environment, overridden by the flags given."""
    given = {k: v for k, v in vars(args).items() if k in GatewaySettings.model_fields}
    try:
        return load_settings(given)
    except StartupError as exc:
        exit_on(exc, prog=f"sluice {args.command}")


def _setup_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    # One line per upstream call would drown the gateway's own messages.
    logging.getLogger("httpx").setLevel(max(logging.WARNING, logging.getLogger().level))


def run_gateway(settings: GatewaySettings) -> int:
    """Serves the gateway with one uvicorn worker until interrupted."""
    _setup_logging(settings.log_level)
    try:
        check_keys(
            inline=settings.api_keys,
            path=settings.api_keys_file,
            admin_token=settings.admin_token,
        )
        check_embedding_model(settings.embedding_model, semantic=settings.semantic)
        sock = listen(settings.host, settings.port)
        check_redis(settings.redis_url)
    except StartupError as exc:
        exit_on(exc, prog="sluice gateway")
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=settings.log_level == "debug",
    )
    server = uvicorn.Server(config)
    # uvicorn names the address only for sockets it binds itself.
    log.info("listening on http://%s:%d", settings.host, settings.port)
    with sock:
        server.run(sockets=[sock])
    return 0 if server.started else STARTUP_FAILURE


def _banner(settings: GatewaySettings, admin_token: str, generated: bool) -> str:
    host = "127.0.0.1" if settings.host in ("0.0.0.0", "::") else settings.host
    base = f"http://{host}:{settings.port}"
    token_note = " (generated for this run)" if generated else ""
    return "\n".join(
        [
            "",
            "Sluice is ready.",
            f"  Point your chatbot here:  {base}/v1   (OpenAI base_url; any API key)",
            f"  Dashboard:                {base}/admin   (asks for the admin token)",
            f"  Admin API:                {base}/admin/stats",
            f"      Authorization: Bearer {admin_token}{token_note}",
            f"  Terminal stats:           SLUICE_GATEWAY_ADMIN_TOKEN={admin_token} "
            f"sluice stats --url {base}",
            f"  Health / metrics:         {base}/ready  {base}/metrics",
            "",
        ]
    )


async def _serve_all(
    settings: GatewaySettings,
    sock: socket.socket,
    backend: subprocess.Popen[bytes],
    banner: str,
    stop: threading.Event,
) -> int:
    config = uvicorn.Config(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
    )
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve(sockets=[sock]))
    ready_url = f"http://127.0.0.1:{settings.port}/ready"
    announced = False
    async with httpx.AsyncClient() as http:
        while not serving.done():
            if stop.is_set():
                server.should_exit = True  # a signal that came outside uvicorn's own handling
            if backend.poll() is not None:
                server.should_exit = True
                await serving
                if backend.returncode == STARTUP_FAILURE and not announced:
                    return STARTUP_FAILURE  # the backend printed why, in one line
                log.error("the backend exited with code %s; stopping", backend.returncode)
                return 1
            if not announced and server.started:
                try:
                    announced = (await http.get(ready_url, timeout=2.0)).status_code == 200
                except httpx.HTTPError:
                    announced = False
                if announced:
                    print(banner, flush=True)
            await asyncio.sleep(0.5)
    await serving
    return 0


def _die_with_parent() -> Callable[[], None] | None:
    """On Linux, a `preexec_fn` making the child get SIGTERM when this process dies, even by
    SIGKILL, so the backend is never left behind; None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM))
        if os.getppid() != parent:  # the parent died before the signal was armed
            os.kill(os.getpid(), signal.SIGTERM)

    return preexec


def _backend_port(given: int | None) -> int:
    """The port asked for, if it is free; else any free one on loopback."""
    if given is None:
        return free_port("127.0.0.1")
    if not port_is_free("127.0.0.1", given):
        raise StartupError(
            f"port {given} on 127.0.0.1 (--backend-port) is already in use",
            "Stop the process listening there, pass a free port to --backend-port, "
            "or leave it out to take any free port",
        )
    return given


def run_serve(args: argparse.Namespace) -> int:
    """Backend in a child process, gateway in this one; both stop together."""
    settings = settings_from(args)
    _setup_logging(settings.log_level)
    try:
        check_keys(
            inline=settings.api_keys,
            path=settings.api_keys_file,
            admin_token=settings.admin_token,
        )
        check_embedding_model(settings.embedding_model, semantic=settings.semantic)
        sock = listen(settings.host, settings.port)
        backend_port = _backend_port(args.backend_port)
        check_redis(settings.redis_url)
    except StartupError as exc:
        exit_on(exc, prog="sluice serve")
    settings = settings.model_copy(update={"upstreams": [f"http://127.0.0.1:{backend_port}"]})
    generated = False
    if not settings.admin_token:
        settings = settings.model_copy(update={"admin_token": secrets.token_urlsafe(16)})
        generated = True
    command = [
        sys.executable, "-m", "gateway.cli", "backend",
        "--host", "127.0.0.1", "--port", str(backend_port), "--model", args.model,
    ]  # fmt: skip
    log.info("starting the backend (model %s) on port %d", args.model, backend_port)
    # SIGTERM and SIGINT only ask to stop: uvicorn handles them while it serves, then
    # re-raises them once it has shut down; this handler takes them quietly, so the event
    # loop ends normally and the `finally` below stops the backend.
    stop = threading.Event()

    def request_stop(signum: int, frame: types.FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, request_stop)
    backend = subprocess.Popen(command, preexec_fn=_die_with_parent())
    try:
        banner = _banner(settings, str(settings.admin_token), generated)
        with sock:
            return asyncio.run(_serve_all(settings, sock, backend, banner, stop))
    finally:
        backend.terminate()
        try:
            backend.wait(timeout=15)
        except subprocess.TimeoutExpired:
            backend.kill()


def run_stats(args: argparse.Namespace) -> int:
    """Prints /admin/stats as tables (or as JSON)."""
    token = args.admin_token or os.environ.get("SLUICE_GATEWAY_ADMIN_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else {}
    try:
        reply = httpx.get(args.url.rstrip("/") + "/admin/stats", headers=headers, timeout=10.0)
    except httpx.HTTPError as exc:
        print(f"cannot reach {args.url}: {exc}", file=sys.stderr)
        return 2
    if reply.status_code != 200:
        print(f"{reply.status_code}: {reply.text}", file=sys.stderr)
        return 1
    if args.json:
        print(reply.text)
    else:
        print(render_stats(reply.json(), window=args.window))
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The `sluice` argument parser."""
    parser = argparse.ArgumentParser(prog="sluice", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="gateway + backend + embedded Redis on one machine")
    serve.add_argument("--model", default="demo", help="demo | bench | HF folder or hub id")
    serve.add_argument(
        "--backend-port", type=int, default=None, help="default: any free port on 127.0.0.1"
    )
    add_settings_flags(serve, skip=("upstreams",))

    gateway = commands.add_parser("gateway", help="the caching gateway alone")
    add_settings_flags(gateway)

    commands.add_parser("backend", help="the batching backend alone (see `sluice backend -h`)")

    stats = commands.add_parser("stats", help="print a gateway's /admin/stats as tables")
    stats.add_argument("--url", default="http://127.0.0.1:8000", help="the gateway's base URL")
    stats.add_argument("--admin-token", help="default: $SLUICE_GATEWAY_ADMIN_TOKEN")
    stats.add_argument(
        "--window", choices=("last_minute", "last_hour", "since_start"), default="since_start"
    )
    stats.add_argument("--json", action="store_true", help="print the raw JSON")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `sluice` command."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list[:1] == ["backend"]:
        from backend.cli import main as backend_main

        backend_main(args_list[1:])
        return 0
    args = build_parser().parse_args(args_list)
    if args.command == "serve":
        return run_serve(args)
    if args.command == "gateway":
        return run_gateway(settings_from(args))
    return run_stats(args)


if __name__ == "__main__":
    sys.exit(main())
