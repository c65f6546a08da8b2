"""The admin page's files: served by the gateway, from the package, with a policy that lets
them reach this gateway only; the data stays behind the admin token."""

from __future__ import annotations

import re

import httpx

from tests.gateway.conftest import Stack


async def test_the_page_and_its_files_come_from_the_gateway(stack: Stack) -> None:
    async with httpx.AsyncClient(base_url=stack.url) as http:
        page = await http.get("/admin")
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        policy = page.headers["content-security-policy"]
        assert "default-src 'none'" in policy and "connect-src 'self'" in policy
        linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
        assert sorted(linked) == ["/admin/static/admin.css", "/admin/static/admin.js"]
        for path, kind in zip(sorted(linked), ("text/css", "text/javascript"), strict=True):
            reply = await http.get(path)
            assert reply.status_code == 200 and reply.headers["content-type"].startswith(kind)
            assert reply.headers["content-security-policy"] == policy
            # Nothing from elsewhere: the only URL in them is SVG's namespace name.
            assert re.findall(r"https?://[^\s\"']+", reply.text) in (
                [],
                ["http://www.w3.org/2000/svg"],
            )
        assert (await http.get("/admin/static/..%2Fstats.py")).status_code == 404
        assert (await http.get("/admin/static/stats.py")).status_code == 404
        assert (await http.get("/admin/stats")).status_code == 401
        assert (await http.get("/admin/cache/top")).status_code == 401
        assert "sessionStorage" in (await http.get("/admin/static/admin.js")).text
