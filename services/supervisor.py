"""`orderflow up`: the whole system in the foreground, one log stream prefixed by process.

It starts embedded Redis and PostgreSQL when none is configured or responding, migrates,
then runs the gateway, the relay, the four services and the SMTP catcher as child
processes. A child that exits unexpectedly is restarted after a backoff. Ctrl-C or SIGTERM
stops every child (SIGTERM, then SIGKILL after the grace period) and the embedded servers.
"""

import contextlib
import ctypes
import ctypes.util
import os
import selectors
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from shared.db.migrate import upgrade_to_head
from shared.embedded import EmbeddedPostgres, EmbeddedRedis, tcp_answers
from shared.settings import Settings

CHILD_GRACE_SECONDS = 7.0
RESTART_BACKOFF_CAP_SECONDS = 10.0
PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>

SERVICE_NAMES = ("payments", "inventory", "notifications", "analytics")
# /metrics of the services (9101 to 9104, in SERVICE_NAMES order) and of the relay; the
# gateway serves its own on the HTTP port.
SERVICE_METRICS_PORT = 9101
RELAY_METRICS_PORT = 9105


@dataclass
class Child:
    name: str
    args: list[str]
    metrics_port: int = 0
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    restart_at: float = 0.0
    buffer: bytes = field(default=b"")


def default_processes() -> list[Child]:
    command = [sys.executable, "-m", "services.cli"]
    children = [
        Child("smtp", [*command, "smtp-catcher"]),
        Child("gateway", [*command, "gateway"]),
        Child("relay", [*command, "relay"], RELAY_METRICS_PORT),
    ]
    children += [
        Child(name, [*command, "service", name], SERVICE_METRICS_PORT + index)
        for index, name in enumerate(SERVICE_NAMES)
    ]
    return children


def _host_port(url: str, default_port: int) -> tuple[str, int]:
    parts = urlsplit(url.replace("+asyncpg", ""))
    return parts.hostname or "127.0.0.1", parts.port or default_port


class Supervisor:
    def __init__(
        self, settings: Settings, environ: Mapping[str, str], force_embedded: bool = False
    ) -> None:
        self.settings = settings
        self.force_embedded = force_embedded
        self.environ = dict(environ)
        self.children = default_processes()
        self.embedded: list[EmbeddedRedis | EmbeddedPostgres] = []
        self.stopping = False

    def resolve_servers(self) -> dict[str, str]:
        """Return the Redis and PostgreSQL URLs, starting embedded servers where needed."""
        urls = {"ORDERFLOW_REDIS_URL": self.settings.redis_url}
        urls["ORDERFLOW_DATABASE_URL"] = self.settings.database_url
        data_dir = self.settings.data_dir.resolve()
        redis_host, redis_port = _host_port(self.settings.redis_url, 6379)
        if self.force_embedded or (
            "ORDERFLOW_REDIS_URL" not in self.environ and not tcp_answers(redis_host, redis_port)
        ):
            print("starting an embedded Redis-compatible server (Valkey)", flush=True)
            redis = EmbeddedRedis(data_dir / "redis", port=None)
            urls["ORDERFLOW_REDIS_URL"] = redis.start()
            self.embedded.append(redis)
        pg_host, pg_port = _host_port(self.settings.database_url, 5432)
        if self.force_embedded or (
            "ORDERFLOW_DATABASE_URL" not in self.environ and not tcp_answers(pg_host, pg_port)
        ):
            print("starting an embedded PostgreSQL", flush=True)
            postgres = EmbeddedPostgres(data_dir / "postgres", port=None)
            urls["ORDERFLOW_DATABASE_URL"] = postgres.start()
            self.embedded.append(postgres)
        return urls

    def child_environment(self, urls: Mapping[str, str]) -> dict[str, str]:
        env = dict(self.environ)
        env.update(urls)
        env.setdefault("ORDERFLOW_DATA_DIR", str(self.settings.data_dir.resolve()))
        env.setdefault("ORDERFLOW_LOG_FORMAT", "console" if sys.stdout.isatty() else "json")
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def run(self) -> int:
        signal.signal(signal.SIGTERM, self._request_stop)
        signal.signal(signal.SIGINT, self._request_stop)
        try:
            urls = self.resolve_servers()
            print("applying database migrations", flush=True)
            upgrade_to_head(urls["ORDERFLOW_DATABASE_URL"])
            env = self.child_environment(urls)
            for child in self.children:
                self._spawn(child, env)
            self._print_banner()
            self._pump(env)
        finally:
            self._stop_children()
            for server in reversed(self.embedded):
                server.stop()
        print("orderflow stopped", flush=True)
        return 0

    def _request_stop(self, _signum: int, _frame: object) -> None:
        self.stopping = True

    def _spawn(self, child: Child, env: Mapping[str, str]) -> None:
        child_env = dict(env)
        # ORDERFLOW_METRICS_PORT=0 turns the metrics ports off, e.g. for several systems side
        # by side; any other value is replaced by each child's own port.
        if child.metrics_port and self.environ.get("ORDERFLOW_METRICS_PORT") != "0":
            child_env["ORDERFLOW_METRICS_PORT"] = str(child.metrics_port)
        child.process = subprocess.Popen(
            child.args,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=child_env,
            # preexec_fn can deadlock in a process with threads; the supervisor starts none.
            preexec_fn=_terminate_with_parent,  # noqa: PLW1509
            start_new_session=True,
        )
        os.set_blocking(child.process.stdout.fileno(), False)  # type: ignore[union-attr]

    def _pump(self, env: Mapping[str, str]) -> None:
        selector = selectors.DefaultSelector()
        registered: dict[int, Child] = {}
        while not self.stopping:
            for child in self.children:
                self._watch(child, env, selector, registered)
            for key, _ in selector.select(timeout=0.2):
                self._forward(registered[key.fd])

    def _watch(
        self,
        child: Child,
        env: Mapping[str, str],
        selector: selectors.BaseSelector,
        registered: dict[int, Child],
    ) -> None:
        process = child.process
        if process is not None and process.stdout is not None:
            fd = process.stdout.fileno()
            if fd not in registered:
                selector.register(fd, selectors.EVENT_READ)
                registered[fd] = child
            if process.poll() is None:
                return
            self._forward(child)
            selector.unregister(fd)
            del registered[fd]
            process.stdout.close()
            child.restarts += 1
            delay = min(2.0 ** min(child.restarts, 6) / 4, RESTART_BACKOFF_CAP_SECONDS)
            child.restart_at = time.monotonic() + delay
            child.process = None
            print(
                f"[{child.name}] exited with code {process.returncode}; restarting in {delay:.1f} s"
            )
            return
        if child.process is None and time.monotonic() >= child.restart_at:
            self._spawn(child, env)

    def _forward(self, child: Child) -> None:
        process = child.process
        if process is None or process.stdout is None:
            return
        try:
            chunk = process.stdout.read() or b""
        except (BlockingIOError, ValueError):
            return
        child.buffer += chunk
        *lines, child.buffer = child.buffer.split(b"\n")
        for line in lines:
            sys.stdout.write(f"[{child.name:>13}] {line.decode(errors='replace')}\n")
        sys.stdout.flush()

    def _stop_children(self) -> None:
        running = [c.process for c in self.children if c.process and c.process.poll() is None]
        for process in running:
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + CHILD_GRACE_SECONDS
        for process in running:
            try:
                process.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                process.wait(timeout=5)
        for child in self.children:
            self._forward(child)

    def _print_banner(self) -> None:
        base = self.settings.base_url
        print(
            "\norderflow is running; Ctrl-C stops it.\n"
            f"  API:      {base}/api/v1/orders\n"
            f"  monitor:  {base}/monitor\n"
            f"  OpenAPI:  {base}/schema\n"
            f"  metrics:  {base}/metrics\n"
            f"  mail:     {self.settings.mail_path.resolve()}\n"
            "  try:\n"
            f"    curl -s -X POST {base}/api/v1/orders -H 'Content-Type: application/json' "
            f"-d @docs/sample-order.json\n",
            flush=True,
        )


def _terminate_with_parent() -> None:
    """Ask Linux to send SIGTERM to this child when `up` dies, even by SIGKILL.

    Without it, children of a killed `up` keep their ports and the next `up` cannot bind.
    """
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


def _signal_group(process: "subprocess.Popen[bytes]", signum: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signum)


def run_up(settings: Settings, force_embedded: bool = False) -> int:
    Path(settings.data_dir).mkdir(parents=True, exist_ok=True)
    return Supervisor(settings, os.environ, force_embedded).run()
