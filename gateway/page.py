"""The admin page: one HTML file with its script and style, all served from the package.

The page holds no data; its script asks the admin routes for everything with the token the
operator types in, so the page itself needs none. The content security policy keeps it from
loading or sending anything anywhere but this gateway.
"""

from __future__ import annotations

from importlib import resources

from starlette.requests import Request
from starlette.responses import Response

from gateway.errors import NotFound

_TYPES = {
    "index.html": "text/html; charset=utf-8",
    "admin.js": "text/javascript; charset=utf-8",
    "admin.css": "text/css; charset=utf-8",
}
_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-cache",
}


def _file(name: str) -> Response:
    if name not in _TYPES:
        raise NotFound(f"No admin page file named {name!r}.")
    body = resources.files("gateway").joinpath("static", name).read_bytes()
    return Response(body, media_type=_TYPES[name], headers=_HEADERS)


async def admin_page(request: Request) -> Response:
    """GET /admin: the dashboard."""
    return _file("index.html")


async def admin_static(request: Request) -> Response:
    """GET /admin/static/{name}: the dashboard's script and style."""
    return _file(request.path_params["name"])
