"""Turns the JSON of fastconv's benchmark suite into a markdown table of speedups.

    pytest --benchmark-only bench/ --benchmark-json=results.json
    python bench/report.py results.json -o results.md --png results.png
    python bench/report.py --readme README.md bench/results/*.json

For every layer case and network the report gives the time of each variant (fastconv backends, PyTorch
baselines) and the speedup of each fastconv backend over each baseline: baseline time / fastconv time, so a
number above 1 means fastconv is faster. A summary gives the geometric mean of the speedups per op and batch,
and a roofline table how close each fastconv backend came to the machine's measured copy bandwidth and matmul
rate. ``--png`` draws the speedups (matplotlib); ``--readme`` rewrites the performance section of a README,
between ``<!-- perf:begin -->`` and ``<!-- perf:end -->``, from committed results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

STATS = ("median", "min", "mean")
NETWORK_SECTION = "networks"
README_BEGIN, README_END = "<!-- perf:begin -->", "<!-- perf:end -->"
SPEEDUP_TICKS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.7, 0.85, 1, 1.2, 1.5, 2, 3, 5, 7, 10, 20)


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
    # (case, batch, variant) -> (fraction of the copy bandwidth, fraction of the matmul rate)
    fractions: dict[tuple[str, int, str], tuple[float, float]] = field(default_factory=dict)


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
    environment = data.get("machine_info", {}).get("fastconv") or benchmarks[0]["extra_info"]
    return from_benchmarks(benchmarks, environment, data.get("datetime", "?"), stat)


def from_benchmarks(benchmarks: list[dict], environment: dict[str, object], datetime: str,
                    stat: str = "median") -> Results:
    """Results from pytest-benchmark's entries (each with ``extra_info`` and ``stats``), in the order they ran."""
    sections: dict[str, Section] = {}
    for b in benchmarks:
        info = b["extra_info"]
        name = info.get("op", NETWORK_SECTION)
        section = sections.setdefault(name, Section(name))
        key = (info["case"], info["batch"])
        section.rows.setdefault(key, Row(*key)).times[info["variant"]] = b["stats"][stat]
        if "bandwidth_fraction" in info:
            section.fractions[(*key, info["variant"])] = (info["bandwidth_fraction"], info["compute_fraction"])
    infos = [b["extra_info"] for b in benchmarks]
    environment = {**infos[0], **environment}  # results of older runs lack some machine_info keys
    return Results(
        # Ops in the order they ran, the networks last.
        sections=dict(sorted(sections.items(), key=lambda item: item[0] == NETWORK_SECTION)),
        fastconv=_first_seen(i["variant"] for i in infos if i["kind"] == "fastconv"),
        baselines=_first_seen(i["variant"] for i in infos if i["kind"] != "fastconv"),
        environment=environment,
        datetime=datetime,
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
        *([f"Machine ceilings, measured in this run: copy {env['ceiling_gb_per_s']:.1f} GB/s, "
           f"{env.get('ceiling_matmul_dtype')} matmul {env['ceiling_gflops_per_s']:.1f} GFLOP/s"]
          if "ceiling_gb_per_s" in env else []),
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
    threads, cpus = env.get("threads"), env.get("cpu_count")
    if isinstance(threads, int) and isinstance(cpus, int) and threads < cpus:
        notes.append(f"**Threads:** run with --bench-threads {threads} on {cpus} CPUs, so that other processes "
                     "disturb the comparison less; multithreaded speedups may differ.")
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


def roofline(results: Results) -> list[str]:
    """How close each fastconv backend came to the machine's ceilings: the median over the cases of its
    fraction of the copy bandwidth (bytes the op must move / time) and of the matmul rate (FLOPs / time)."""
    rows = []
    for section in results.sections.values():
        for batch in sorted({row.batch for row in section.rows.values()}):
            for variant in results.fastconv:
                fractions = [f for (_, b, v), f in section.fractions.items() if b == batch and v == variant]
                if fractions:
                    rows.append([section.name, str(batch), variant, str(len(fractions)),
                                 f"{100 * statistics.median(f[0] for f in fractions):.1f}%",
                                 f"{100 * statistics.median(f[1] for f in fractions):.1f}%"])
    if not rows:
        return []
    head = ["op / network", "batch", "variant", "cases", "of copy bandwidth", "of matmul rate"]
    return ["## Roofline (median fraction of the machine's ceilings)", "", *_table(head, rows, 3), ""]


def render(results: Results, stat: str) -> str:
    lines = header(results, stat) + summary(results) + roofline(results)
    for section in results.sections.values():
        lines += section_table(results, section)
    return "\n".join(lines)


def chart(results: Results, path: Path) -> None:
    """A PNG of the speedups: one panel per op and for the networks, a bar per fastconv/baseline pair.

    Raises:
        RuntimeError: matplotlib is not installed.
    """
    try:
        import matplotlib
    except ImportError as e:
        raise RuntimeError("--png needs matplotlib (pip install matplotlib, or the package's 'bench' extra)") from e
    matplotlib.use("Agg")  # files only: no display needed
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    pairs = _pairs(results)
    sections = [s for s in results.sections.values() if s.rows]
    if not pairs or not sections:
        raise ValueError("no fastconv backend and baseline ran side by side: nothing to chart")
    heights = [max(1.5, 0.12 * len(s.rows) * len(pairs) + 0.8) for s in sections]
    fig, axes = plt.subplots(len(sections), 1, figsize=(10, sum(heights)), squeeze=False,
                             gridspec_kw={"height_ratios": heights})
    width = 0.8 / len(pairs)
    for ax, section in zip(axes[:, 0], sections, strict=True):
        labels = [f"{row.case} b{row.batch}" for row in section.rows.values()]
        for i, (fast, base) in enumerate(pairs):
            values = [_speedup(row, fast, base) or math.nan for row in section.rows.values()]
            # Bars grow from 1 (equal time): right when fastconv is faster, left when slower.
            ax.barh([y + i * width for y in range(len(labels))], [v - 1 for v in values], left=1.0, height=width,
                    label=f"{fast} vs {base}")
        ax.axvline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yticks([y + (len(pairs) - 1) * width / 2 for y in range(len(labels))], labels, fontsize=7)
        ax.xaxis.set_major_locator(matplotlib.ticker.FixedLocator(SPEEDUP_TICKS))
        ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}x"))
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.invert_yaxis()
        ax.set_title(section.name, fontsize=9)
        ax.set_xlabel("speedup: baseline time / fastconv time (> 1: fastconv faster)", fontsize=8)
    # One legend for all panels, above them: every panel has the same pairs in the same colours.
    handles, labels = axes[-1, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=7, bbox_to_anchor=(0.5, 0.985))
    env = results.environment
    fig.suptitle(f"fastconv speedups on {env.get('device_name')} ({', '.join(results.dtypes)}, "
                 f"{env.get('threads')} threads)", fontsize=10, y=0.998)
    fig.tight_layout(rect=(0, 0, 1, 1 - 0.9 / sum(heights)))  # room for the title and legend
    fig.savefig(path, dpi=100)
    plt.close(fig)


def readme_section(entries: list[tuple[Path, Results]], readme: Path) -> list[str]:
    """The README's performance section: per committed result, the networks and the per-op summary."""
    lines = [README_BEGIN,
             f"<!-- generated by: python bench/report.py --readme {readme.name} "
             f"{' '.join(str(p) for p, _ in entries)} -->", ""]
    for path, results in entries:
        env = results.environment
        load = (f", load average {min(results.load_averages):.1f} to {max(results.load_averages):.1f} on "
                f"{env.get('cpu_count')} CPUs" if results.load_averages else "")
        commit = env.get("commit")
        lines += [f"### {env.get('device_name')} ({env.get('device')}), {', '.join(results.dtypes)}", "",
                  f"Run {results.datetime[:16]}, commit {commit[:12] if commit else 'unknown'}, torch "
                  f"{env.get('torch')}, {env.get('threads')} torch threads{load}. "
                  f"Median times; speedup = baseline time / fastconv time.", ""]
        lines += [line for note in header(results, "median") if note.startswith("**")
                  for line in (note, "")]
        links = [f"[{p.name}]({os.path.relpath(p, readme.parent)})"
                 for p in (path.with_suffix(".md"), path.with_suffix(".png")) if p.exists()]
        if links:
            lines += [f"Full report: {', '.join(links)}.", ""]
        networks = results.sections.get(NETWORK_SECTION)
        if networks:
            lines += section_table(results, networks)[2:]
        lines += summary(results)[2:]
        lines += roofline(results)[2:]
    lines.append(README_END)
    return lines


def replace_readme_section(readme: Path, section: list[str]) -> None:
    """Rewrites the text between the markers of ``readme``.

    Raises:
        ValueError: the README lacks the markers.
    """
    text = readme.read_text()
    begin, end = text.find(README_BEGIN), text.find(README_END)
    if begin < 0 or end < begin:
        raise ValueError(f"{readme} has no {README_BEGIN} ... {README_END} section to replace")
    readme.write_text(text[:begin] + "\n".join(section) + text[end + len(README_END):])


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Writes a markdown report of fastconv's benchmarks from a pytest-benchmark JSON "
        "(pytest --benchmark-only bench/ --benchmark-json=FILE): the machine and versions, then per op "
        "and layer case, and per network, the time of each variant and the speedup of each fastconv backend "
        "over each baseline (baseline time / fastconv time; above 1 means fastconv is faster), with a summary "
        "of geometric means and the fraction of the machine's ceilings reached.",
    )
    parser.add_argument("json", type=Path, nargs="+", help="pytest-benchmark JSON written with --benchmark-json "
                        "(several only with --readme)")
    parser.add_argument("-o", "--output", type=Path, help="markdown file to write (default: standard output)")
    parser.add_argument("--png", type=Path, help="also draw the speedups into this PNG (needs matplotlib)")
    parser.add_argument("--readme", type=Path, help=f"rewrite the section between {README_BEGIN} and "
                        f"{README_END} of this README from the given results, instead of writing a report")
    parser.add_argument("--stat", choices=STATS, default="median", help="which time of the rounds to compare "
                        "(default: median)")
    args = parser.parse_args(argv)
    if len(args.json) > 1 and args.readme is None:
        parser.error("several JSON files only with --readme")
    try:
        entries = [(path, load(path, args.stat)) for path in args.json]
        if args.readme is not None:
            replace_readme_section(args.readme, readme_section(entries, args.readme))
            return 0
        results = entries[0][1]
        if args.png is not None:
            chart(results, args.png)
    except (OSError, ValueError, RuntimeError) as e:
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
