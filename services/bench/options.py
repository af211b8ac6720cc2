"""The `orderflow bench` command line. It imports nothing heavy, since every command builds it."""

import argparse

SCENARIOS = ("intake", "e2e", "demo", "priority")
DEFAULT_SCALE = 0.25
DEFAULT_CONNECTIONS = 128
DEFAULT_DRAIN_TIMEOUT_SECONDS = 180.0
DEFAULT_REQUEST_TIMEOUT_SECONDS = 10.0
# Options that configure a system the bench starts, so they make no sense with --url.
OWN_SYSTEM_OPTIONS = ("latency", "consumer_base", "database_url", "redis_url", "pause_services")


def add_bench_parser(
    commands: "argparse._SubParsersAction[argparse.ArgumentParser]",
) -> argparse.ArgumentParser:
    bench = commands.add_parser(
        "bench",
        help="measure throughput and latency under open-loop load",
        description="Run one benchmark scenario against a running system (--url), or against "
        "one the bench starts with `orderflow up` and removes afterwards, then write "
        "result.json, report.md and PNG plots into --out and print a summary. "
        "intake: the highest order rate accepted with p99 under 50 ms and no errors. "
        "e2e: the highest order rate whose orders are all fully processed as fast as they "
        "come, with the time from acceptance to each step. demo: the k6 stress shape under "
        "the demo step times, and how long the backlog takes to drain. priority: an overload "
        "of the low tier, where the critical tier should keep its latency.",
    )

    bench.add_argument("--scenario", required=True, choices=SCENARIOS, help="what to measure")

    bench.add_argument(
        "--url",
        help="base URL of a running gateway, e.g. http://127.0.0.1:8080 (default: start a "
        "system on free ports and stop it afterwards)",
    )

    bench.add_argument(
        "--out", help="folder for the results (default: a new folder under loadtest/results/)"
    )

    bench.add_argument(
        "--duration",
        type=float,
        help="seconds of load per rate step (intake default 10, e2e 15) or of the overload "
        "(priority, default 30); demo follows the stress shape times --scale",
    )

    bench.add_argument(
        "--rates",
        type=float,
        nargs="+",
        metavar="RATE",
        help="orders per second to step through (intake default 250 to 3000, e2e 25 to "
        "1000), or the overload rate (priority, default between the low and the critical "
        "tier's capacity: 80 with the default consumer settings)",
    )

    bench.add_argument(
        "--scale",
        type=float,
        default=DEFAULT_SCALE,
        help="demo only: factor on the stress shape's stage durations and virtual users "
        f"(1 is the full 10 minutes up to 400 orders/s; default {DEFAULT_SCALE})",
    )

    bench.add_argument(
        "--connections",
        type=int,
        default=DEFAULT_CONNECTIONS,
        help=f"HTTP connections the load generator opens at most (default {DEFAULT_CONNECTIONS})",
    )

    bench.add_argument(
        "--drain-timeout",
        type=float,
        default=DEFAULT_DRAIN_TIMEOUT_SECONDS,
        help="seconds to wait for the backlog to drain after a load "
        f"(default {DEFAULT_DRAIN_TIMEOUT_SECONDS:.0f})",
    )

    bench.add_argument(
        "--request-timeout",
        type=float,
        default=DEFAULT_REQUEST_TIMEOUT_SECONDS,
        help="seconds before an unanswered request counts as an error "
        f"(default {DEFAULT_REQUEST_TIMEOUT_SECONDS:.0f})",
    )

    own = bench.add_argument_group("a system the bench starts (not with --url)")
    own.add_argument(
        "--latency",
        choices=("none", "demo"),
        help="ORDERFLOW_SIMULATED_LATENCY (default demo for demo and priority, none otherwise)",
    )

    own.add_argument("--consumer-base", type=int, help="ORDERFLOW_CONSUMER_BASE (default 1)")
    own.add_argument(
        "--database-url",
        help="PostgreSQL to use as it is (default: a scratch database beside "
        "ORDERFLOW_DATABASE_URL, dropped afterwards)",
    )

    own.add_argument(
        "--redis-url",
        help="Redis to use (default ORDERFLOW_REDIS_URL); the run's stream keys are deleted "
        "afterwards",
    )

    own.add_argument(
        "--pause-services",
        action="store_true",
        help="intake only: suspend the four services while load runs, to measure the "
        "gateway and relay alone",
    )
    return bench


def check_options(args: argparse.Namespace) -> str | None:
    """Return what is wrong with a combination of options, or None."""
    if args.url is not None:
        conflicting = [name for name in OWN_SYSTEM_OPTIONS if getattr(args, name)]
        if conflicting:
            flags = ", ".join("--" + name.replace("_", "-") for name in conflicting)
            return (
                f"cannot combine --url with {flags}: options of a system the bench starts "
                "do not apply to a running one"
            )
        if not args.url.startswith("http://"):
            return f"--url must be an http:// URL (got {args.url!r})"
    if args.scenario == "demo" and args.rates:
        return "demo follows the k6 stress shape; set its size with --scale, not --rates"
    if args.pause_services and args.scenario != "intake":
        return "--pause-services applies to the intake scenario only"
    positive = {
        "--duration": args.duration,
        "--scale": args.scale,
        "--connections": args.connections,
        "--drain-timeout": args.drain_timeout,
        "--request-timeout": args.request_timeout,
        "--consumer-base": args.consumer_base,
    }
    for flag, value in positive.items():
        if value is not None and value <= 0:
            return f"{flag} must be positive (got {value:g})"
    if args.rates and min(args.rates) <= 0:
        return f"--rates must all be positive (got {min(args.rates):g})"
    return None
