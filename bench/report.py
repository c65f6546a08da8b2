"""Writes a benchmark's results into its own section of docs/BENCHMARKS.md.

Each benchmark owns the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`,
so figures land in the docs exactly as measured, with the machine, date and command.
"""

from __future__ import annotations

import datetime as dt
import os
import platform
import shlex
import sys
from pathlib import Path

BENCHMARKS_MD = Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"


def machine_line() -> str:
    """One line naming the machine: CPU model, cores, memory, Python."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        pages = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        memory = f"{pages / 2**30:.0f} GiB"
    except (ValueError, OSError):
        memory = "unknown memory"
    return f"{cpu}, {os.cpu_count()} cores, {memory}, Python {platform.python_version()}"


def reproduce_command() -> str:
    """The command line that produced this run, runnable from the repository root."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    if spec is not None and spec.name:  # run with `python -m`
        return shlex.join(["python", "-m", spec.name, *sys.argv[1:]])
    script = Path(sys.argv[0]).resolve()
    repo = BENCHMARKS_MD.parent.parent
    if script.is_relative_to(repo):
        module = ".".join(script.relative_to(repo).with_suffix("").parts)
        return shlex.join(["python", "-m", module, *sys.argv[1:]])
    return "python " + shlex.join(sys.argv)


def write_section(name: str, body_markdown: str, path: Path = BENCHMARKS_MD) -> None:
    """Replaces (or appends) the section NAME with the body, stamped with machine/date/command."""
    start, end = f"<!-- bench:{name}:start -->", f"<!-- bench:{name}:end -->"
    stamp = (
        f"Measured {dt.date.today().isoformat()} on {machine_line()}.\n"
        f"Reproduce: `{reproduce_command()}`\n\n"
    )
    block = f"{start}\n{stamp}{body_markdown.strip()}\n{end}"
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        _, after = rest.split(end, 1)
        text = before + block + after
    else:
        text = text.rstrip() + f"\n\n{block}\n"
    path.write_text(text)
