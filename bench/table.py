"""What every benchmark prints: versions, and one table of measures with ratios and goals."""

from __future__ import annotations


def version(dist: str) -> str:
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed(dist)
    except PackageNotFoundError:
        return "absent"


def row(measure, value, peer="-", ratio=None, goal="-", met=None) -> list[str]:
    return [measure, value, peer, "-" if ratio is None else f"{ratio:.2f}x", goal,
            "-" if met is None else ("yes" if met else "NO")]


def print_table(rows: list[list[str]]) -> None:
    head = ["measure", "value", "peer", "ratio", "goal", "met"]
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

    def line(cells):
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths)) + " |"

    print(line(head))
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for r in rows:
        print(line(r))
