"""Turns the JSON of fastconv's benchmark suite into a markdown table of speedups.

    pytest --benchmark-only bench/ --benchmark-json=results.json
    python bench/report.py results.json -o results.md

For every layer case and network the report gives the time of each variant (fastconv backends, PyTorch
baselines) and the speedup of each fastconv backend over each baseline: baseline time / fastconv time, so a
number above 1 means fastconv is faster. A summary gives the geometric mean of the speedups per op and batch.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STATS = ("median", "min", "mean")
NETWORK_SECTION = "networks"


@dataclass
class Row:
    """One case at one batch size: its time per variant (seconds)."""

    case: str
    batch: int
    times: dict[str, float] = field(default_factory=dict)


@dataclass
class Section:
    """An op (every layer case of it) or the whole networks."""

    name: str
    rows: dict[tuple[str, int], Row] = field(default_factory=dict)


@dataclass
class Results:
    sections: dict[str, Section]
    fastconv: list[str]  # variant names, in the order first seen
    baselines: list[str]
    environment: dict[str, object]
    datetime: str
    dtypes: list[str]
    load_averages: list[float]


def _first_seen(values: Iterable[str]) -> list[str]:
    return list(dict.fromkeys(values))


def load(path: Path, stat: str) -> Results:
    """Reads a pytest-benchmark JSON written by fastconv's suite.

    Raises:
        ValueError: the file holds no fastconv benchmark results.
    """
    data = json.loads(path.read_text())
    benchmarks = [b for b in data.get("benchmarks", []) if "variant" in b.get("extra_info", {})]
    if not benchmarks:
        raise ValueError(f"{path} holds no fastconv benchmark results (pytest-benchmark JSON from bench/ expected)")
    sections: dict[str, Section] = {}
    for b in benchmarks:
        info = b["extra_info"]
        name = info.get("op", NETWORK_SECTION)
        section = sections.setdefault(name, Section(name))
        key = (info["case"], info["batch"])
        section.rows.setdefault(key, Row(*key)).times[info["variant"]] = b["stats"][stat]
    infos = [b["extra_info"] for b in benchmarks]
    environment = data.get("machine_info", {}).get("fastconv") or infos[0]
    return Results(
        # Ops in the order they ran, the networks last.
        sections=dict(sorted(sections.items(), key=lambda item: item[0] == NETWORK_SECTION)),
        fastconv=_first_seen(i["variant"] for i in infos if i["kind"] == "fastconv"),
        baselines=_first_seen(i["variant"] for i in infos if i["kind"] != "fastconv"),
        environment=environment,
        datetime=data.get("datetime", "?"),
        dtypes=_first_seen(i["dtype"] for i in infos),
        load_averages=[i["load_average"] for i in infos if i.get("load_average") is not None],
    )


def format_time(seconds: float) -> str:
    if seconds < 1e-3:
        return f"{seconds * 1e6:.1f} µs"
    if seconds < 1:
        return f"{seconds * 1e3:.2f} ms"
    return f"{seconds:.3f} s"


def _speedup(row: Row, fast: str, base: str) -> float | None:
    if fast in row.times and base in row.times:
        return row.times[base] / row.times[fast]
    return None


def _format_speedup(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}x"


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], numeric_from: int) -> list[str]:
    align = ["---" if i < numeric_from else "---:" for i in range(len(header))]
    return ["| " + " | ".join(cells) + " |" for cells in (header, align, *rows)]


def _pairs(results: Results) -> list[tuple[str, str]]:
    return [(f, b) for f in results.fastconv for b in results.baselines]


def header(results: Results, stat: str) -> list[str]:
    env = results.environment
    commit = env.get("commit")
    facts = [
        f"Device: {env.get('device_name')} ({env.get('device')}); torch CPU threads: {env.get('threads')}",
        f"torch {env.get('torch')}, torchvision {env.get('torchvision')}, triton {env.get('triton')}, "
        f"CUDA {env.get('cuda')}, cuDNN {env.get('cudnn')}",
        f"fastconv {env.get('fastconv')}, commit {commit[:12] if commit else 'unknown'}, "
        f"fastconv._C: {env.get('fastconv_C')}",
        f"dtype {', '.join(results.dtypes)}; run {results.datetime}",
        f"Times are the {stat} over the rounds; a speedup is baseline time / fastconv time (> 1: fastconv "
        "is faster), measured side by side in one run.",
    ]
    notes = []
    if results.load_averages:
        cpus = env.get("cpu_count") or 1
        low, high = min(results.load_averages), max(results.load_averages)
        facts.append(f"Load average (1 min) at the start of each benchmark: {low:.1f} to {high:.1f} on {cpus} CPUs")
        # The suite keeps about `threads` CPUs busy itself; more than one CPU's worth beyond that is someone else.
        if high > cpus + 1:
            notes.append(f"**Warning:** other processes competed for the CPUs during this run (load average up "
                         f"to {high:.1f} on {cpus} CPUs): the times, and the ratios between variants that suffer "
                         "differently from oversubscription, are not reliable.")
    if not results.fastconv:
        notes.append("No fastconv backend ran in this run, so there are no speedups; the baselines' times follow.")
    lines = ["# fastconv benchmarks", "", *(f"- {f}" for f in facts), ""]
    for note in notes:
        lines += [note, ""]
    return lines


def summary(results: Results) -> list[str]:
    """Geometric mean speedup of each fastconv backend over each baseline, per section and batch."""
    pairs = _pairs(results)
    if not pairs:
        return []
    rows = []
    for section in results.sections.values():
        for batch in sorted({row.batch for row in section.rows.values()}):
            batch_rows = [r for r in section.rows.values() if r.batch == batch]
            cells = [section.name, str(batch), str(len(batch_rows))]
            for fast, base in pairs:
                speedups = [s for s in (_speedup(r, fast, base) for r in batch_rows) if s is not None]
                geomean = math.exp(sum(map(math.log, speedups)) / len(speedups)) if speedups else None
                cells.append(_format_speedup(geomean))
            rows.append(cells)
    head = ["op / network", "batch", "cases", *(f"{f} vs {b}" for f, b in pairs)]
    return ["## Summary (geometric mean of the speedups)", "", *_table(head, rows, 1), ""]


def section_table(results: Results, section: Section) -> list[str]:
    variants = [*results.baselines, *results.fastconv]
    pairs = _pairs(results)
    rows = []
    for row in section.rows.values():
        times = [format_time(row.times[v]) if v in row.times else "-" for v in variants]
        speedups = [_format_speedup(_speedup(row, f, b)) for f, b in pairs]
        rows.append([row.case, str(row.batch), *times, *speedups])
    head = ["case", "batch", *variants, *(f"{f} vs {b}" for f, b in pairs)]
    return [f"## {section.name}", "", *_table(head, rows, 1), ""]


def render(results: Results, stat: str) -> str:
    lines = header(results, stat) + summary(results)
    for section in results.sections.values():
        lines += section_table(results, section)
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Writes a markdown report of fastconv's benchmarks from a pytest-benchmark JSON "
        "(pytest --benchmark-only bench/ --benchmark-json=FILE): the machine and versions, then per op "
        "and layer case, and per network, the time of each variant and the speedup of each fastconv backend "
        "over each baseline (baseline time / fastconv time; above 1 means fastconv is faster), with a summary "
        "of geometric means.",
    )
    parser.add_argument("json", type=Path, help="pytest-benchmark JSON written with --benchmark-json")
    parser.add_argument("-o", "--output", type=Path, help="markdown file to write (default: standard output)")
    parser.add_argument("--stat", choices=STATS, default="median", help="which time of the rounds to compare "
                        "(default: median)")
    args = parser.parse_args(argv)
    try:
        results = load(args.json, args.stat)
    except (OSError, ValueError) as e:
        print(f"report.py: {e}", file=sys.stderr)
        return 2
    text = render(results, args.stat)
    if args.output is None:
        print(text)
    else:
        args.output.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
