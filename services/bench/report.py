"""The benchmark's output: `result.json`, `report.md`, PNG plots and a summary table.

Per-second series are built here from the raw records (every request, every sampled
backlog, every order's step times), so `result.json` contains the data the plots show. Plots use
matplotlib's object API without pyplot, so no display backend or global state is involved.
"""

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure

from services.bench.markdown import render_markdown
from services.bench.observe import tier_seconds
from services.bench.scenarios import HEADLINE_KEYS, BenchContext
from services.bench.stats import per_second_counts, per_second_percentiles
from services.bench.targets import evaluate_targets

TIERS = ("critical", "high", "default", "low")
TIER_COLOURS = {"critical": "tab:red", "high": "tab:orange", "default": "tab:blue", "low": "grey"}
FIGURE_SIZE_INCHES = (10, 4.5)
# Roles drawn in the CPU plot: the system's own processes and the servers it uses.
PLOTTED_ROLES = (
    "gateway",
    "relay",
    "payments",
    "inventory",
    "notifications",
    "analytics",
    "postgres (host)",
    "redis (host)",
    "bench",
)


def build_series(ctx: BenchContext) -> dict[str, Any]:
    """Return per-second throughput, latency, backlog and CPU series from offset 0."""
    http = [
        (run.started_at - ctx.origin + due, latency, status)
        for run in ctx.runs
        for due, latency, status in zip(run.scheduled, run.latency, run.status, strict=True)
    ]
    done = [order.done_at - ctx.origin for order in ctx.orders if order.done_at is not None]
    last_sample = ctx.sampler.samples[-1].offset if ctx.sampler.samples else 0.0
    seconds = math.ceil(max([0.0, last_sample, *done, *(t for t, _, _ in http)])) + 1
    p50, p99 = per_second_percentiles(
        ((t, latency * 1000) for t, latency, _ in http), seconds, (0.5, 0.99)
    )
    return {
        "seconds": seconds,
        "requested_per_s": _requested_series(ctx, seconds),
        "accepted_per_s": per_second_counts((t for t, _, s in http if s == 201), seconds),
        "errors_per_s": per_second_counts((t for t, _, s in http if s != 201), seconds),
        "processed_per_s": per_second_counts(done, seconds),
        "http_p50_ms": [_round(value) for value in p50],
        "http_p99_ms": [_round(value) for value in p99],
        "load_end_offsets": ctx.load_end_offsets,
        "samples": [
            {
                "offset": sample.offset,
                "backlog": sample.backlog,
                "cpu_percent": sample.cpu_percent,
                "rss_mb": sample.rss_mb,
                "host_cpu_percent": sample.host_cpu_percent,
            }
            for sample in ctx.sampler.samples
        ],
    }


def _requested_series(ctx: BenchContext, seconds: int) -> list[float]:
    requested = [0.0] * seconds
    for run in ctx.runs:
        start = run.started_at - ctx.origin
        for second in range(seconds):
            offset = second + 0.5 - start
            if 0 <= offset < run.profile.seconds:
                requested[second] = round(run.profile.rate_at(offset), 1)
    return requested


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


def write_outputs(out: Path, result: dict[str, Any], ctx: BenchContext) -> list[Path]:
    """Write result.json, the plots and report.md into `out`; return the files written."""
    out.mkdir(parents=True, exist_ok=True)
    result["targets"] = evaluate_targets(result)
    plots = write_plots(out, result["series"], ctx)
    (out / "result.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    (out / "report.md").write_text(render_markdown(result, [plot.name for plot in plots]))
    return [out / "result.json", out / "report.md", *plots]


def write_plots(out: Path, series: dict[str, Any], ctx: BenchContext) -> list[Path]:
    written = [_plot_throughput(out, series), _plot_latency(out, series, ctx)]
    if series["samples"]:
        written += [_plot_backlog(out, series), _plot_cpu(out, series)]
    return written


def _mark_load_ends(axes: Axes, series: dict[str, Any]) -> None:
    for index, offset in enumerate(series["load_end_offsets"]):
        axes.axvline(offset, color="black", linewidth=0.6, linestyle=":",
                     label="load ended" if index == 0 else None)  # fmt: skip


def _plot_throughput(out: Path, series: dict[str, Any]) -> Path:
    figure = Figure(figsize=FIGURE_SIZE_INCHES)
    axes = figure.subplots()
    seconds = range(series["seconds"])
    axes.plot(seconds, series["requested_per_s"], color="lightgrey", label="requested")
    axes.plot(seconds, series["accepted_per_s"], color="tab:green", label="accepted (201)")
    axes.plot(seconds, series["processed_per_s"], color="tab:blue", label="fully processed")
    if any(series["errors_per_s"]):
        axes.plot(seconds, series["errors_per_s"], color="tab:red", label="errors")
    _mark_load_ends(axes, series)
    axes.set(xlabel="seconds since start", ylabel="orders per second", title="Throughput")
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    path = out / "throughput.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _plot_latency(out: Path, series: dict[str, Any], ctx: BenchContext) -> Path:
    rows = 2 if ctx.orders else 1
    figure = Figure(figsize=(10, 4 * rows))
    axes = figure.subplots(rows, 1, squeeze=False)
    http_axes = axes[0][0]
    seconds = range(series["seconds"])
    http_axes.plot(seconds, _gaps(series["http_p50_ms"]), label="p50")
    http_axes.plot(seconds, _gaps(series["http_p99_ms"]), label="p99")
    http_axes.set(ylabel="ms (log)", title="POST /api/v1/orders latency, by second sent")
    http_axes.set_yscale("log")
    http_axes.legend(loc="upper left")
    http_axes.grid(alpha=0.3)
    if ctx.orders:
        tier_axes = axes[1][0]
        for tier in TIERS:
            p99 = _tier_p99_by_second(ctx, tier, series["seconds"])
            tier_axes.plot(seconds, _gaps(p99), color=TIER_COLOURS[tier], label=f"{tier} p99")
        tier_axes.set(ylabel="seconds", title="Accepted to tier done (p99), by second accepted")
        tier_axes.legend(loc="upper left")
        tier_axes.grid(alpha=0.3)
    axes[-1][0].set_xlabel("seconds since start")
    path = out / "latency.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _tier_p99_by_second(ctx: BenchContext, tier: str, seconds: int) -> list[float | None]:
    pairs = []
    for order in ctx.orders:
        if order.done_at is None:
            continue
        waited = tier_seconds(order, ctx.tier_of).get(tier)
        if waited is not None:
            pairs.append((order.created - ctx.origin, waited))
    (p99,) = per_second_percentiles(pairs, seconds, (0.99,))
    return p99


def _gaps(values: Sequence[float | None]) -> list[float]:
    return [math.nan if value is None else value for value in values]


def _plot_backlog(out: Path, series: dict[str, Any]) -> Path:
    figure = Figure(figsize=FIGURE_SIZE_INCHES)
    axes = figure.subplots()
    offsets = [sample["offset"] for sample in series["samples"]]
    for tier in TIERS:
        values = [sample["backlog"].get(tier, math.nan) for sample in series["samples"]]
        axes.plot(offsets, values, color=TIER_COLOURS[tier], label=tier)
    _mark_load_ends(axes, series)
    axes.set(
        xlabel="seconds since start",
        ylabel="entries (lag + pending)",
        title="Backlog per tier (slowest group)",
    )
    axes.legend(loc="upper left")
    axes.grid(alpha=0.3)
    path = out / "backlog.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def _plot_cpu(out: Path, series: dict[str, Any]) -> Path:
    figure = Figure(figsize=FIGURE_SIZE_INCHES)
    axes = figure.subplots()
    offsets = [sample["offset"] for sample in series["samples"]]
    for role in PLOTTED_ROLES:
        values = [sample["cpu_percent"].get(role, math.nan) for sample in series["samples"]]
        if not all(math.isnan(value) for value in values):
            axes.plot(offsets, values, label=role, linewidth=1)
    _mark_load_ends(axes, series)
    axes.set(xlabel="seconds since start", ylabel="% of one core", title="CPU per process")
    axes.legend(loc="upper left", fontsize="small", ncols=3)
    axes.grid(alpha=0.3)
    path = out / "cpu.png"
    figure.savefig(path, dpi=100, bbox_inches="tight")
    return path


def summary_table(result: dict[str, Any]) -> str:
    """Return the headline figures and targets as an aligned plain-text table."""
    rows = [("scenario", str(result["scenario"]))]
    rows += [(key, _text(result.get(key))) for key in HEADLINE_KEYS]
    rows.append(("verdict", str(result.get("verdict", ""))))
    for target in result.get("targets", []):
        rows.append((f"target: {target['name']}", f"{target['status']} ({target['detail']})"))
    width = max(len(name) for name, _ in rows)
    return "\n".join(f"{name:<{width}}  {value}" for name, value in rows)


def _text(value: object) -> str:
    return "null" if value is None else str(value)
