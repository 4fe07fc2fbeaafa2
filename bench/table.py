"""What every benchmark prints, and what skews its figures: versions, the machine, the CPU other
processes took meanwhile, memory peaks, and one table of measures with ratios and goals.

No MLX, no workbench, no torch here: bench/torch_peer.py imports it and runs with torch alone.
"""

from __future__ import annotations

import os
import re
import sys
import time
from pathlib import Path


def version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(dist)
    except PackageNotFoundError:
        return "absent"


# The machine ----------------------------------------------------------------------------------------

# The instruction-set extensions that decide which CPU kernels win (bench/RESULTS.md, by CPU).
_FLAGS = ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_fp16", "amx_tile", "amx_bf16", "asimd", "sve")


def _cpuinfo() -> dict[str, str]:
    info = {}
    try:
        for line in open("/proc/cpuinfo"):
            name, _, value = line.partition(":")
            info.setdefault(name.strip(), value.strip())
    except OSError:
        pass
    return info


def cpu_name() -> str:
    import platform

    return _cpuinfo().get("model name") or platform.processor() or platform.machine()


def machine_line() -> str:
    """The processor a table's figures belong to: model, cores and the extensions that matter."""
    info = _cpuinfo()
    flags = set((info.get("flags") or info.get("Features") or "").split())
    shown = ", ".join(f for f in _FLAGS if f in flags) or "none listed"
    return f"cpu: {cpu_name()}, {os.cpu_count()} CPUs available to this run; flags: {shown}"


# What skews a figure: other processes' CPU, and memory ------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def machine_busy_s() -> float | None:
    """CPU seconds the whole machine has spent busy since boot (Linux), to see who else used it."""
    try:
        fields = [int(f) for f in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    except (OSError, ValueError):
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = fields
    return (user + nice + system + irq + softirq + steal) / _TICK


def tree_cpu_s() -> float:
    """CPU seconds of this process and its descendants, the reaped ones' included (Linux)."""
    procs = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
                procs[int(entry.name)] = (int(fields[1]), sum(map(int, fields[11:15])) / _TICK)
            except (OSError, ValueError, IndexError):
                continue
    me = os.getpid()

    def ours(pid: int) -> bool:
        for _ in range(64):
            if pid == me:
                return True
            if pid <= 1 or pid not in procs:
                return False
            pid = procs[pid][0]
        return False

    return sum(cpu for pid, (_, cpu) in procs.items() if ours(pid))


class Interference:
    """CPU that other processes on the machine used while a measure ran, in CPUs on average (Linux).

    All CPU time the machine spent, less this process tree's (the service, its workers and mlx-lm
    included); a shared machine's neighbours show up here, and skew any figure taken meanwhile."""

    def __enter__(self):
        self.start = (time.monotonic(), machine_busy_s() or 0.0, tree_cpu_s())
        return self

    def __exit__(self, *exc):
        now = (time.monotonic(), machine_busy_s() or 0.0, tree_cpu_s())
        wall, busy, ours = (a - b for a, b in zip(now, self.start))
        self.cpus = max(busy - ours, 0.0) / wall if wall > 0 else 0.0
        return False


def status_kb(field: str, pid: int | str = "self") -> int | None:
    """A field of a live process's /proc status in KiB (VmRSS, VmHWM: Linux); None when unknown."""
    try:
        match = re.search(rf"^{field}:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.M)
    except OSError:
        return None
    return int(match[1]) if match else None


# The table ------------------------------------------------------------------------------------------


def tps(value: float) -> str:
    return f"{value:,.0f} tok/s" if value >= 100 else f"{value:.1f} tok/s"


def row(measure, value, peer="-", ratio=None, goal="-", met=None) -> list[str]:
    return [measure, value, peer, "-" if ratio is None else f"{ratio:.2f}x", goal,
            "-" if met is None else ("yes" if met else "NO")]


def print_table(rows: list[list[str]], flush: bool = False) -> None:
    print_grid(["measure", "value", "peer", "ratio", "goal", "met"], rows, flush)


def print_grid(head: list[str], rows: list[list[str]], flush: bool = False) -> None:
    """A Markdown table of any columns (print_table's, or one row per job)."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
    if flush:
        sys.stdout.flush()
