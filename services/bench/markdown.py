"""`report.md`: a benchmark result as Markdown tables, with the plots beside it."""

from collections.abc import Sequence
from typing import Any

from services.bench.scenarios import HEADLINE_KEYS

DISTRIBUTION_KEYS = ("count", "p50", "p90", "p99", "max")


def render_markdown(result: dict[str, Any], plots: Sequence[str]) -> str:
    parts = [
        f"# orderflow bench: {result['scenario']}",
        str(result.get("verdict", "")),
        _context(result),
        "## Headline figures",
        _headline(result),
    ]
    if result.get("targets"):
        parts += ["## Targets", _targets(result["targets"])]
    if result.get("steps"):
        parts += ["## Rate steps", _steps(result["steps"])]
    errors = _error_samples(result)
    if errors:
        parts += ["## Error responses", errors]
    e2e = result.get("e2e") or _last_step_e2e(result)
    if e2e and e2e.get("orders"):
        parts += ["## Time from acceptance, in seconds", _e2e(e2e)]
    if result.get("backlog_peak"):
        parts += ["## Backlog per tier", _backlog(result)]
    if result.get("processes"):
        parts += ["## Processes", _processes(result["processes"])]
    parts += ["## Load generator", _generator(result)]
    if result.get("warnings"):
        parts += ["## Warnings", "\n".join(f"- {warning}" for warning in result["warnings"])]
    if plots:
        parts += ["## Plots", "\n\n".join(f"![{name}]({name})" for name in plots)]
    return "\n\n".join(parts) + "\n"


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(_cell(value) for value in row) + " |" for row in rows]
    return "\n".join(lines)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.2f}".rstrip("0").rstrip(".") if value % 1 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value).replace("|", "/")


def _context(result: dict[str, Any]) -> str:
    machine = result.get("machine", {})
    system = result.get("system", {})
    lines = [
        f"- Command: `{result.get('command', '')}`",
        f"- Started {result.get('started_at', '')}, took {result.get('seconds', 0):.0f} s.",
        f"- Machine: {machine.get('cpus')} CPUs ({machine.get('cpu_model', 'unknown model')}), "
        f"{machine.get('memory_gb')} GB memory, load average {machine.get('load_average')} "
        "at the start. Other work may share the machine: compare runs on the same machine.",
    ]
    if system.get("started_by_bench"):
        lines.append(
            f"- System: started by the bench with `orderflow up` (simulated latency "
            f"{system.get('latency')}, consumer base {system.get('consumer_base') or 1})."
        )
    else:
        lines.append(f"- System: already running at {system.get('url')}.")
    return "\n".join(lines)


def _headline(result: dict[str, Any]) -> str:
    return _table(("figure", "value"), [(key, result.get(key)) for key in HEADLINE_KEYS])


def _targets(targets: Sequence[dict[str, Any]]) -> str:
    return _table(
        ("target", "status", "detail"), [(t["name"], t["status"], t["detail"]) for t in targets]
    )


def _steps(steps: Sequence[dict[str, Any]]) -> str:
    rows = []
    for step in steps:
        e2e = step.get("e2e", {}).get("fully_processed_s", {})
        rows.append(
            (
                step["rate"],
                step["achieved_per_s"],
                step["accepted_per_s"],
                step["http_p50_ms"],
                step["http_p99_ms"],
                step["errors"],
                step.get("processed_per_s"),
                e2e.get("p99"),
                step.get("drain_s"),
                step["generator_cpu_percent"],
                "yes" if step["passed"] else "no: " + "; ".join(step["failures"]),
            )
        )
    headers = (
        "requested/s",
        "sent/s",
        "accepted/s",
        "HTTP p50 ms",
        "HTTP p99 ms",
        "errors",
        "processed/s",
        "e2e p99 s",
        "drain s",
        "generator CPU %",
        "passed",
    )
    return _table(headers, rows)


def _error_samples(result: dict[str, Any]) -> str:
    """List the start of one response body per failing status, per load run."""
    runs = [(f"{step['rate']:g}/s", step) for step in result.get("steps", [])]
    if result.get("load"):
        runs.append(("load", result["load"]))
    lines = [
        f"- {label}, status {status}: `{' '.join(body.split())[:200]}`"
        for label, run in runs
        for status, body in run.get("error_samples", {}).items()
    ]
    return "\n".join(lines)


def _last_step_e2e(result: dict[str, Any]) -> dict[str, Any] | None:
    passed = [step for step in result.get("steps", []) if step.get("passed") and "e2e" in step]
    return passed[-1]["e2e"] if passed else None


def _e2e(e2e: dict[str, Any]) -> str:
    rows: list[list[object]] = []
    for name, dist in e2e.get("steps_s", {}).items():
        rows.append([f"step {name}", *(dist.get(key) for key in DISTRIBUTION_KEYS)])
    for name, dist in e2e.get("tiers_s", {}).items():
        rows.append([f"tier {name}", *(dist.get(key) for key in DISTRIBUTION_KEYS)])
    whole = e2e.get("fully_processed_s", {})
    rows.append(["fully processed", *(whole.get(key) for key in DISTRIBUTION_KEYS)])
    note = (
        f"{e2e['fully_processed']} of {e2e['orders']} orders fully processed; "
        f"step states: {e2e.get('step_states')}."
    )
    return _table(("until", *DISTRIBUTION_KEYS), rows) + "\n\n" + note


def _backlog(result: dict[str, Any]) -> str:
    peak = result.get("backlog_peak", {})
    at_end = result.get("backlog_at_load_end", {})
    catch_up = result.get("catch_up_s")
    headers = ["tier", "peak entries", "entries at load end"]
    if catch_up is not None:
        headers.append("caught up s after load end")
    rows = []
    for tier in ("critical", "high", "default", "low"):
        row = [tier, peak.get(tier), at_end.get(tier)]
        if catch_up is not None:
            row.append(catch_up.get(tier))
        rows.append(row)
    return _table(headers, rows)


def _processes(processes: dict[str, dict[str, float]]) -> str:
    rows = [
        (role, use["cpu_mean_percent"], use["cpu_max_percent"], use["rss_max_mb"])
        for role, use in processes.items()
    ]
    note = "CPU is in percent of one core, sampled once a second."
    return _table(("process", "CPU mean %", "CPU max %", "RSS max MB"), rows) + "\n\n" + note


def _generator(result: dict[str, Any]) -> str:
    generator = result.get("generator", {})
    lines = [
        f"- CPU: {generator.get('cpu_percent')} % of one core while sending "
        f"({generator.get('connections')} connections at most).",
    ]
    shortfalls = generator.get("shortfalls") or []
    lines += [f"- Could not keep the rate: {text}" for text in shortfalls]
    if not shortfalls:
        lines.append("- The generator kept every requested rate.")
    return "\n".join(lines)
