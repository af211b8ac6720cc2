"""The `orderflow` command: every process of the system and its operator tools."""

import argparse
import asyncio
import sys
from collections.abc import Callable

from pydantic import ValidationError
from redis.exceptions import ConnectionError as RedisConnectionError

from shared.logs import configure_logging
from shared.outages import is_dependency_outage
from shared.settings import Settings, get_settings

SERVICES = ("payments", "inventory", "notifications", "analytics")


def _cmd_up(settings: Settings, args: argparse.Namespace) -> int:
    from services.supervisor import run_up

    return run_up(settings, force_embedded=args.embedded)


def _cmd_gateway(settings: Settings, _args: argparse.Namespace) -> int:
    from services.gateway.app import run_gateway

    configure_logging(settings.log_level, settings.log_format, "gateway")
    run_gateway(settings)
    return 0


def _cmd_relay(settings: Settings, _args: argparse.Namespace) -> int:
    from services.gateway.relay import run_relay

    configure_logging(settings.log_level, settings.log_format, "relay")
    asyncio.run(run_relay(settings))
    return 0


def _cmd_service(settings: Settings, args: argparse.Namespace) -> int:
    from shared.service import ServiceRuntime, run_service

    configure_logging(settings.log_level, settings.log_format, args.name)
    factories: dict[str, Callable[[Settings], ServiceRuntime]] = {}
    if args.name == "payments":
        from services.payments.app import create_runtime as factory
    elif args.name == "inventory":
        from services.inventory.app import create_runtime as factory
    elif args.name == "notifications":
        from services.notifications.app import create_runtime as factory
    else:
        from services.analytics.app import create_runtime as factory
    factories[args.name] = factory
    run_service(factories[args.name](settings))
    return 0


def _cmd_migrate(settings: Settings, _args: argparse.Namespace) -> int:
    from shared.db.migrate import upgrade_to_head

    configure_logging(settings.log_level, settings.log_format, "migrate")
    upgrade_to_head(settings.database_url)
    print("database is at the newest schema")
    return 0


def _cmd_smtp_catcher(settings: Settings, _args: argparse.Namespace) -> int:
    from services.notifications.catcher import run_catcher

    configure_logging(settings.log_level, settings.log_format, "smtp")
    run_catcher(settings.smtp_host, settings.smtp_port, settings.mail_path)
    return 0


def _cmd_reconcile(settings: Settings, _args: argparse.Namespace) -> int:
    from services.gateway.reconcile import reconcile
    from shared.db.engine import make_engine, make_session_factory

    configure_logging(settings.log_level, settings.log_format, "reconcile")

    async def run() -> int:
        engine = make_engine(settings.database_url, pool_size=2)
        try:
            return await reconcile(make_session_factory(engine))
        finally:
            await engine.dispose()

    count = asyncio.run(run())
    print(f"queued the events of {count} unfinished orders again")
    return 0


def _cmd_chaos(settings: Settings, args: argparse.Namespace) -> int:
    from services.chaos import ChaosOptions, run_chaos

    # The report is printed; the embedded servers' own log lines would only interleave.
    configure_logging("WARNING", "console", "chaos")
    return run_chaos(ChaosOptions(args.duration, args.rate, args.seed, args.keep_data))


def _cmd_bench(settings: Settings, args: argparse.Namespace) -> int:
    from services.bench.runner import run_bench

    return run_bench(settings, args)


def _positive(minimum: float) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum:g} (got {text})")
        return value

    return parse


def _add_chaos_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    from services.chaos import MIN_DURATION_SECONDS

    chaos = commands.add_parser(
        "chaos",
        help="run a private copy of the system under load and faults, then check that no "
        "order was lost or handled twice",
        description="Start private Redis and PostgreSQL servers on spare loopback ports and "
        "every orderflow process, send orders over HTTP while killing processes, restarting "
        "Redis with and without its data, stopping PostgreSQL and injecting bad entries, then "
        "check every delivery guarantee. Exits 1 if a check fails. Needs nothing running.",
    )
    chaos.add_argument(
        "--duration",
        type=_positive(MIN_DURATION_SECONDS),
        default=120.0,
        metavar="SECONDS",
        help=f"seconds of load while faults are injected, at least {MIN_DURATION_SECONDS:g} "
        "(default 120); settling and checks take up to two minutes more",
    )
    chaos.add_argument(
        "--rate",
        type=_positive(0.5),
        default=10.0,
        metavar="ORDERS_PER_SECOND",
        help="new orders per second (default 10, which leaves a two-core machine room to "
        "catch up after each fault)",
    )
    chaos.add_argument(
        "--seed", type=int, default=1, help="seed of the order contents and follow-ups (default 1)"
    )
    chaos.add_argument(
        "--keep-data",
        action="store_true",
        help="keep the temporary folder with the servers' data and the process logs",
    )
    chaos.set_defaults(handler=_cmd_chaos)


def _cmd_dlq(settings: Settings, args: argparse.Namespace) -> int:
    from services.dlq_cli import run_dlq

    return asyncio.run(run_dlq(settings, args))


def _add_dlq_parser(commands: "argparse._SubParsersAction[argparse.ArgumentParser]") -> None:
    dlq = commands.add_parser("dlq", help="list, replay or purge dead letters")
    actions = dlq.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="print dead letters, oldest first")
    listing.add_argument("--group", help="only this consumer group's, e.g. email")
    listing.add_argument(
        "--tier", choices=["critical", "high", "default", "low"], help="only this tier's"
    )
    listing.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    listing.add_argument("--json", action="store_true", help="print JSON lines")
    for name, text in (
        ("replay", "put dead letters back on their tier stream"),
        ("purge", "delete dead letters for good"),
    ):
        action = actions.add_parser(name, help=text)
        chosen = action.add_mutually_exclusive_group(required=True)
        chosen.add_argument(
            "references", nargs="*", default=[], metavar="TIER:ENTRY_ID", help="dead letters"
        )
        chosen.add_argument("--group", help="every dead letter of this consumer group")
        chosen.add_argument("--all", action="store_true", help="every dead letter")
    dlq.set_defaults(handler=_cmd_dlq)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orderflow",
        description="Order processing on Redis Streams. Settings come from ORDERFLOW_* "
        "environment variables (see .env.example).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    up = commands.add_parser(
        "up",
        help="run the whole system in the foreground; Ctrl-C stops it",
        description="Start embedded Redis and PostgreSQL when none responds, migrate, and run "
        "the gateway, relay, services and SMTP catcher with one prefixed log stream.",
    )
    up.add_argument(
        "--embedded",
        action="store_true",
        help="start embedded Redis and PostgreSQL under ORDERFLOW_DATA_DIR even when "
        "servers answer on the default ports",
    )
    up.set_defaults(handler=_cmd_up)
    commands.add_parser(
        "gateway", help="run the HTTP gateway on ORDERFLOW_HTTP_HOST:ORDERFLOW_HTTP_PORT"
    ).set_defaults(handler=_cmd_gateway)
    commands.add_parser(
        "relay", help="run the outbox relay that publishes events to the tier streams"
    ).set_defaults(handler=_cmd_relay)
    service = commands.add_parser("service", help="run one event-driven service")
    service.add_argument("name", choices=SERVICES, help="the service to run")
    service.set_defaults(handler=_cmd_service)
    commands.add_parser(
        "migrate", help="apply the database migrations to ORDERFLOW_DATABASE_URL"
    ).set_defaults(handler=_cmd_migrate)
    commands.add_parser(
        "smtp-catcher",
        help="run a local SMTP server that saves each message as an .eml file under "
        "ORDERFLOW_MAIL_DIR (default .data/mail)",
    ).set_defaults(handler=_cmd_smtp_catcher)
    commands.add_parser(
        "reconcile",
        help="queue again the events of every order with an unfinished step "
        "(the relay does this by itself after Redis restarts)",
    ).set_defaults(handler=_cmd_reconcile)
    _add_dlq_parser(commands)
    _add_chaos_parser(commands)
    from services.bench.options import add_bench_parser

    add_bench_parser(commands).set_defaults(handler=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    try:
        settings = get_settings()
    except ValidationError as exc:
        print(f"error: invalid ORDERFLOW_* setting:\n{exc}", file=sys.stderr)
        return 2
    try:
        return handler(settings, args)
    except Exception as exc:
        if not is_dependency_outage(exc) and not isinstance(exc, RedisConnectionError):
            raise
        print(
            f"error: a server is unreachable ({type(exc).__name__}: {exc}); check "
            "ORDERFLOW_DATABASE_URL and ORDERFLOW_REDIS_URL, and that the servers run",
            file=sys.stderr,
        )
        return 1


if __name__ == "__main__":
    sys.exit(main())
