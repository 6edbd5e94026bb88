"""benchmarks.md is assembled from named sections, each owned by one qtbench command.

A command replaces only its own section (between ``<!-- qtbench:NAME -->`` markers), so
`qtbench bench env` never clobbers the leaderboard and vice versa.
"""

from __future__ import annotations

import platform
import re
from pathlib import Path

from qtbench.atomic import atomic_write_text

DEFAULT_BENCHMARKS = Path("benchmarks.md")
HEADER = (
    "# qtbench benchmarks\n\n"
    "Every section below is written by a qtbench command (named in the section); "
    "nothing here is typed by hand.\n"
)


def machine_description() -> str:
    """A one-line description of the machine, stated beside every number."""
    import os

    import torch

    from qtbench.cpu_kernels import kernels_description
    from qtbench.nets import bf16_support

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    bf16 = bf16_support(torch.device("cpu"))
    return (
        f"{os.cpu_count()} CPU cores ({cpu}), torch {torch.__version__} "
        f"({torch.get_num_threads()} threads, {kernels_description()}, {bf16}), Python {platform.python_version()}"
    )


def write_section(name: str, body: str, path: str | Path = DEFAULT_BENCHMARKS) -> Path:
    """Replace (or append) section ``name`` of the benchmarks file with ``body``."""
    path = Path(path)
    text = path.read_text() if path.exists() else HEADER
    start, end = f"<!-- qtbench:{name} -->", f"<!-- /qtbench:{name} -->"
    block = f"{start}\n{body.strip()}\n{end}"
    pattern = re.compile(re.escape(start) + r".*?" + re.escape(end), re.DOTALL)
    if pattern.search(text):
        text = pattern.sub(lambda _: block, text)
    else:
        text = text.rstrip("\n") + "\n\n" + block + "\n"
    return atomic_write_text(path, text)


def markdown_table(header: list[str], rows: list[list[object]]) -> str:
    """A GitHub-flavoured markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
