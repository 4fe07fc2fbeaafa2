"""What every benchmark prints: versions, and one table of measures with ratios and goals."""

from __future__ import annotations

import sys


def version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(dist)
    except PackageNotFoundError:
        return "absent"


# The instruction-set extensions that decide which CPU kernels win (bench/RESULTS.md, by CPU).
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "asimd", "sve")


def machine_line() -> str:
    """The processor a table's figures belong to: model, cores and the extensions that matter."""
    import os
    import platform

    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            name, _, value = line.partition(":")
            info.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    model = info.get("model name") or platform.processor() or platform.machine()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    shown = ", ".join(f for f in _FLAGS if f in flags) or "none listed"
    return f"cpu: {model}, {os.cpu_count()} CPUs available to this run; flags: {shown}"


def row(measure, value, peer="-", ratio=None, goal="-", met=None) -> list[str]:
    return [measure, value, peer, "-" if ratio is None else f"{ratio:.2f}x", goal,
            "-" if met is None else ("yes" if met else "NO")]


def print_table(rows: list[list[str]], flush: bool = False) -> None:
    head = ["measure", "value", "peer", "ratio", "goal", "met"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    if flush:
        sys.stdout.flush()
