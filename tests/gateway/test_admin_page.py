"""The /admin page in headless Chromium, against two gateway replicas on one Redis: it shows
the sum of both, its numbers and charts follow the traffic, and its buttons invalidate."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from selenium import webdriver
from selenium.common.exceptions import NoSuchElementException, StaleElementReferenceException
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver
from selenium.webdriver.support.ui import WebDriverWait
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from backend.metrics import BackendMetrics
from tests.cache.conftest import REAL_REDIS_URL
from tests.gateway.conftest import ADMIN, SharedRedis, ask, real_gateway, stored
from tests.gateway.fakes import UpstreamControl, fake_upstream, serving

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "img" / "admin.png"
KEYS = "sk-a=acme,sk-b=globex"


@pytest.fixture
def browser() -> Iterator[WebDriver]:
    if not (os.access(CHROMIUM, os.X_OK) and shutil.which(CHROMEDRIVER)):
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail("chromium and chromium-driver are missing, and CI must run this test")
        pytest.skip("needs the Debian packages chromium and chromium-driver")
    os.environ.setdefault("SE_AVOID_STATS", "true")
    options = Options()
    options.binary_location = CHROMIUM
    for flag in [*FLAGS, "--window-size=1280,1000"]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()


@pytest.fixture
async def real_redis() -> AsyncIterator[SharedRedis]:
    """The real Redis (the page is tested once, there); this test's keys are removed after."""
    redis = SharedRedis("real")
    try:
        await redis.client().ping()
    except Exception as exc:  # pragma: no cover - depends on the machine
        if os.environ.get("CI", "").lower() in ("true", "1"):
            pytest.fail(f"no Redis at {REAL_REDIS_URL}, and CI must run this test")
        pytest.skip(f"no Redis at {REAL_REDIS_URL}: {exc}")
    yield redis
    async for key in redis.clients[0].scan_iter(match=f"{redis.prefix}:*", count=1000):
        await redis.clients[0].delete(key)
    for client in redis.clients:
        await client.aclose()


@contextlib.asynccontextmanager
async def _backend_like_upstream(metrics: BackendMetrics) -> AsyncIterator[str]:
    """The fake upstream, with a Sluice backend's real metrics registry at /metrics."""
    app = fake_upstream(UpstreamControl())

    async def exposition(request: Request) -> Response:
        return Response(metrics.render(), media_type="text/plain")

    app.router.routes.insert(0, Route("/metrics", exposition))
    async with serving(app) as url:
        yield url


async def _in_browser(step: Callable[[], Any]) -> Any:
    """Runs blocking browser steps in a thread, so the gateways on this loop keep serving."""
    return await asyncio.to_thread(step)


def _wait(driver: WebDriver, what: str, check: Callable[[], Any], timeout_s: float = 20) -> Any:
    try:
        return WebDriverWait(driver, timeout_s, poll_frequency=0.2).until(lambda _: check())
    except Exception as exc:
        status, shown = (driver.find_element(By.ID, i).text for i in ("status", "requests"))
        raise AssertionError(
            f"the page never showed {what} (status: {status!r}; requests: {shown!r})"
        ) from exc


def _text(driver: WebDriver, element_id: str) -> str:
    return str(driver.find_element(By.ID, element_id).text)


def _log_in(driver: WebDriver, url: str) -> None:
    driver.get(url + "/admin")
    _wait(driver, "the token form", lambda: driver.find_element(By.ID, "token").is_displayed())
    driver.find_element(By.ID, "token").send_keys("wrong-token")
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    _wait(driver, "the refusal", lambda: "refused" in _text(driver, "login-error"))
    driver.find_element(By.ID, "token").send_keys(ADMIN)
    driver.find_element(By.CSS_SELECTOR, "#login button").click()
    _wait(driver, "the dashboard", lambda: driver.find_element(By.ID, "dashboard").is_displayed())
    assert ADMIN not in driver.current_url
    assert driver.execute_script("return sessionStorage.getItem('sluice-admin-token')") == ADMIN


def _action(driver: WebDriver) -> str:
    return _text(driver, "action")


def _click(driver: WebDriver, selector: str, wait_s: float = 20) -> None:
    """Clicks the element, finding it again if a refresh redrew it meanwhile."""

    def clicked() -> bool:
        try:
            driver.find_element(By.CSS_SELECTOR, selector).click()
        except (NoSuchElementException, StaleElementReferenceException):
            return False
        return True

    _wait(driver, selector, clicked, wait_s)


def _screenshot(driver: WebDriver) -> None:
    """The whole page, for the README."""
    height = int(driver.execute_script("return document.documentElement.scrollHeight"))
    metrics = {"width": 1280, "height": height, "deviceScaleFactor": 1, "mobile": False}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    driver.save_screenshot(str(SCREENSHOT))
    driver.execute_cdp_cmd("Emulation.clearDeviceMetricsOverride", {})


def _shows_requests(driver: WebDriver, n: int) -> None:
    _wait(driver, f"{n} requests", lambda: _text(driver, "requests") == f"{n:,}")


def _chart_counts(driver: WebDriver) -> dict[str, int]:
    counts: dict[str, int] = {}
    for rect in driver.find_elements(By.CSS_SELECTOR, "#timeline rect"):
        series = rect.get_attribute("data-series") or ""
        counts[series] = counts.get(series, 0) + int(rect.get_attribute("data-count") or 0)
    return counts


async def _total(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN}"}) as http:
        stats = (await http.get(url + "/admin/stats")).json()
    overall: dict[str, Any] = stats["gateway"]["since_start"]["overall"]
    return overall


async def test_the_admin_page_follows_traffic_on_both_replicas_and_invalidates(
    real_redis: SharedRedis, browser: WebDriver
) -> None:
    metrics = BackendMetrics()
    async with (
        _backend_like_upstream(metrics) as upstream_url,
        real_gateway(real_redis, upstream_url, api_keys=KEYS) as first,
        real_gateway(real_redis, upstream_url, api_keys=KEYS) as second,
    ):
        await _in_browser(lambda: _log_in(browser, second))
        await _in_browser(lambda: _shows_requests(browser, 0))
        assert await _in_browser(lambda: _chart_counts(browser)) == {}

        # Traffic on both replicas; the page on the second shows the sum.
        question = "What is a sluice?"
        await ask(first, "sk-a", question)
        await stored(first, "sk-a", question)
        for _ in range(3):
            assert (await ask(second, "sk-a", question))[0] == "hit"
        assert (await ask(first, "sk-a", "what is a sluice"))[0] == "semantic"
        await ask(second, "sk-b", "How do locks on a canal work?")
        await ask(second, "sk-b", "How do locks on a canal work?", **{"cache-control": "no-store"})
        metrics.batch_size.observe(1)
        for _ in range(3):
            metrics.batch_size.observe(4)
        metrics.queue_wait_seconds.observe(0.004)
        metrics.generated_tokens.inc(120)
        await asyncio.sleep(0.6)  # each replica writes its counts to Redis every half second
        total = await _total(first)
        assert total == await _total(second)
        await _in_browser(lambda: _shows_requests(browser, total["requests"]))
        hits = f"{total['exact_hits']} / {total['semantic_hits']}"
        assert await _in_browser(lambda: _text(browser, "hits")) == hits
        counts = await _in_browser(lambda: _chart_counts(browser))
        assert counts["exact"] == total["exact_hits"] and counts["semantic"] == 1
        assert counts["miss"] == total["misses"] + total["coalesced"]
        bars = await _in_browser(
            lambda: {
                (r.get_attribute("data-kind"), r.get_attribute("data-q"))
                for r in browser.find_elements(By.CSS_SELECTOR, "#latency rect")
            }
        )
        assert bars == {("hits", "p50"), ("hits", "p99"), ("misses", "p50"), ("misses", "p99")}

        # The backend: its batch sizes as bars, and tokens/s once two readings are apart.
        metrics.generated_tokens.inc(300)
        row = "#backends tr[data-upstream] "
        sizes = await _in_browser(
            lambda: _wait(
                browser,
                "the batch-size bars",
                lambda: {
                    r.get_attribute("data-size"): r.get_attribute("data-count")
                    for r in browser.find_elements(By.CSS_SELECTOR, row + "rect")
                    if r.get_attribute("data-count") != "0"
                },
            )
        )
        assert sizes == {"1": "1", "4": "3"}
        rate = await _in_browser(
            lambda: _wait(
                browser,
                "output tokens/s",
                lambda: (
                    (t := browser.find_element(By.CSS_SELECTOR, row + ".tokens-per-s").text)
                    not in ("-", "0.0")
                    and t
                ),
            )
        )
        assert float(rate) > 0

        # The most-hit entry first, with its hits; its button drops it, and its next request
        # misses.
        async with httpx.AsyncClient(headers={"authorization": f"Bearer {ADMIN}"}) as http:
            top = (await http.get(second + "/admin/cache/top")).json()["data"][0]
        assert top["question"] == question

        def top_cells() -> list[str] | None:
            rows = browser.find_elements(By.CSS_SELECTOR, "#entries tbody tr")
            if not rows or rows[0].get_attribute("data-entry-id") != top["entry_id"]:
                return None
            return [td.text for td in rows[0].find_elements(By.TAG_NAME, "td")]

        cells = await _in_browser(lambda: _wait(browser, "the most-hit entry", top_cells))
        assert cells[:4] == [question, "acme", "fake", str(top["hits"])]
        SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
        await _in_browser(lambda: _screenshot(browser))
        assert SCREENSHOT.stat().st_size > 10_000
        entry_button = f'#entries tr[data-entry-id="{top["entry_id"]}"] button.invalidate-entry'
        await _in_browser(lambda: _click(browser, entry_button))
        await _in_browser(
            lambda: _wait(
                browser,
                "the entry invalidated",
                lambda: _action(browser) == "the entry: invalidated 1 entries",
            )
        )
        assert (await ask(first, "sk-a", question))[0] == "miss"

        # A whole tenant: two presses.
        await stored(second, "sk-b", "How do locks on a canal work?")
        tenant_button = '#entries tr button.invalidate-tenant[data-tenant="globex"]'
        await _in_browser(lambda: _click(browser, tenant_button, wait_s=10))
        assert (await ask(second, "sk-b", "How do locks on a canal work?"))[0] == "hit"
        await _in_browser(lambda: _click(browser, tenant_button))
        await _in_browser(
            lambda: _wait(
                browser,
                "the tenant invalidated",
                lambda: "tenant globex: invalidated" in _action(browser),
            )
        )
        assert (await ask(second, "sk-b", "How do locks on a canal work?"))[0] == "miss"

        # The page on the first replica shows the same sum.
        await asyncio.sleep(0.6)  # counted once the answer is sent, written every half second
        final = await _total(second)
        await _in_browser(lambda: _log_in(browser, first))
        await _in_browser(lambda: _shows_requests(browser, final["requests"]))
