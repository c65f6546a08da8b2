"""Renders /admin/stats as terminal tables for `sluice stats`."""

from __future__ import annotations

from typing import Any

_COLUMNS = (
    ("requests", "requests"),
    ("exact", "exact_hits"),
    ("semantic", "semantic_hits"),
    ("miss", "misses"),
    ("coalesced", "coalesced"),
    ("bypass", "bypasses"),
    ("errors", "errors"),
    ("hit rate", "hit_rate"),
    ("saved calls", "saved_upstream_calls"),
    ("saved tokens", "saved_tokens"),
)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else f"{value:.2f}"
    return str(value)


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f}"


def _line(cells: list[str], widths: list[int]) -> str:
    return "  ".join(
        cell.ljust(width) if i == 0 else cell.rjust(width)
        for i, (cell, width) in enumerate(zip(cells, widths, strict=True))
    )


def _grid(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    lines = [_line(header, widths), "  ".join("-" * w for w in widths)]
    lines += [_line(row, widths) for row in rows]
    return "\n".join(lines)


def _row(name: str, summary: dict[str, Any]) -> list[str]:
    latency = summary.get("latency_ms", {})
    hits, misses = latency.get("hits", {}), latency.get("misses", {})
    return [
        name,
        *(
            f"{summary.get(key, 0.0):.1%}" if key == "hit_rate" else _cell(summary.get(key))
            for _, key in _COLUMNS
        ),
        f"{_ms(hits.get('p50'))}/{_ms(hits.get('p99'))}",
        f"{_ms(misses.get('p50'))}/{_ms(misses.get('p99'))}",
    ]


def _wrong_rows(data: dict[str, Any]) -> list[list[str]]:
    """Overall and per tenant with semantic hits or reports."""

    def row(name: str, summary: dict[str, Any]) -> list[str]:
        rate = summary.get("false_hit_rate")
        return [
            name,
            _cell(summary.get("semantic_hits", 0)),
            _cell(summary.get("reported_wrong", 0)),
            "-" if rate is None else f"{rate:.1%}",
        ]

    if "overall" not in data:
        return []
    tenants = [
        row(f"tenant {t}", summary)
        for t, summary in data.get("per_tenant", {}).items()
        if summary.get("semantic_hits") or summary.get("reported_wrong")
    ]
    return [row("overall", data["overall"]), *tenants]


def render_stats(stats: dict[str, Any], *, window: str = "since_start") -> str:
    """Overall, per-tenant and per-model rows for one window, semantic hits reported wrong,
    then the backends' batching."""
    gateway = stats.get("gateway", {})
    data = gateway.get(window, {})
    header = ["", *(title for title, _ in _COLUMNS), "hit ms p50/p99", "miss ms p50/p99"]
    rows = [_row("overall", data.get("overall", {}))]
    rows += [_row(f"tenant {t}", s) for t, s in data.get("per_tenant", {}).items()]
    rows += [_row(f"model {m}", s) for m, s in data.get("per_model", {}).items()]
    windows = [
        _row(name.replace("_", " "), gateway.get(name, {}).get("overall", {}))
        for name in ("last_minute", "last_hour", "since_start")
    ]
    title = "All requests (all gateways)"
    if gateway.get("redis_available") is False:
        title = "All requests (Redis unavailable: this gateway's unwritten counts only)"
    parts = [
        title,
        _grid(header, windows),
        "",
        f"By tenant and model ({window.replace('_', ' ')})",
        _grid(header, rows),
    ]
    wrong = _wrong_rows(data)
    if wrong:
        header = ["", "semantic hits", "reported wrong", "wrong / semantic"]
        title = f"Semantic hits reported wrong (all gateways, {window.replace('_', ' ')})"
        parts += ["", title, _grid(header, wrong)]
    backends = stats.get("backends", {})
    if backends:
        b_header = ["backend", "up", "outstanding", "queue", "batches", "mean batch",
                    "wait ms", "wait p99 <=", "run ms", "tokens"]  # fmt: skip
        b_rows = []
        for url, info in backends.items():
            batching = info.get("batching") or {}
            b_rows.append(
                [
                    url,
                    "yes" if info.get("reachable") else "no",
                    str(info.get("outstanding", 0)),
                    _cell(batching.get("queue_depth")),
                    _cell(batching.get("batches")),
                    _ms(batching.get("mean_batch_size")),
                    _ms(batching.get("mean_queue_wait_ms")),
                    _cell(batching.get("queue_wait_ms_p99_at_most")),
                    _ms(batching.get("mean_batch_run_ms")),
                    _cell(batching.get("generated_tokens")),
                ]
            )
        parts += ["", "Backends", _grid(b_header, b_rows)]
    return "\n".join(parts)
