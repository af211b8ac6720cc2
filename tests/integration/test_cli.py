"""The `orderflow` command's handling of settings and servers it cannot use."""

import logging
from collections.abc import Iterator

import pytest
import structlog

from services.cli import main
from shared.settings import get_settings

pytestmark = pytest.mark.timeout(30)

# Nothing listens on port 1 of the loopback address.
CLOSED_REDIS_URL = "redis://127.0.0.1:1/0"
CLOSED_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:1/postgres"


@pytest.fixture(autouse=True)
def fresh_settings() -> Iterator[None]:
    # main() reads settings through a cache and configures logging globally; undo both, so
    # nothing of one test's environment leaks into another.
    get_settings.cache_clear()
    root_handlers = list(logging.getLogger().handlers)
    yield
    get_settings.cache_clear()
    # main() configures logging to this test's captured stderr, which closes after it.
    structlog.reset_defaults()
    logging.getLogger().handlers[:] = root_handlers


@pytest.mark.parametrize(
    ("variable", "url", "argv"),
    [
        ("ORDERFLOW_REDIS_URL", CLOSED_REDIS_URL, ["dlq", "list"]),
        ("ORDERFLOW_DATABASE_URL", CLOSED_DATABASE_URL, ["reconcile"]),
    ],
)
def test_cli_reports_unreachable_server(
    variable: str,
    url: str,
    argv: list[str],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv(variable, url)

    code = main(argv)

    error = capsys.readouterr().err
    assert code == 1
    assert "a server is unreachable" in error
    assert "Traceback" not in error


def test_cli_reports_invalid_setting(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("ORDERFLOW_HTTP_PORT", "abc")

    code = main(["dlq", "list"])

    error = capsys.readouterr().err
    assert code == 2
    assert "http_port" in error
    assert "invalid ORDERFLOW_* setting" in error
