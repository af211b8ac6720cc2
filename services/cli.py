"""The `orderflow` command: every process of the system and its operator tools."""

import argparse
import asyncio
import sys
from collections.abc import Callable

from shared.logs import configure_logging
from shared.settings import Settings, get_settings

SERVICES = ("payments", "inventory", "notifications", "analytics")


def _cmd_up(settings: Settings, _args: argparse.Namespace) -> int:
    from services.supervisor import run_up

    return run_up(settings)


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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="orderflow",
        description="Order processing on Redis Streams. Settings come from ORDERFLOW_* "
        "environment variables (see .env.example).",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    commands.add_parser(
        "up",
        help="run the whole system in the foreground; Ctrl-C stops it",
        description="Start embedded Redis and PostgreSQL when none answers, migrate, and run "
        "the gateway, relay, services and SMTP catcher with one prefixed log stream.",
    ).set_defaults(handler=_cmd_up)
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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[Settings, argparse.Namespace], int] = args.handler
    return handler(get_settings(), args)


if __name__ == "__main__":
    sys.exit(main())
