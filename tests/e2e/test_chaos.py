"""`orderflow chaos` end to end: a short run with every fault kind, and a run stopped early.

The short run takes about two minutes: 70 s of load, then settling, the checks and the
shutdown. Its rate is low so that a busy two-core machine keeps up while faults are injected.
"""

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from services.chaos.faults import FAULT_KINDS

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

REPOSITORY_ROOT = Path(__file__).resolve().parents[2]
CHAOS_DURATION_SECONDS = 70
CHAOS_RATE = 5
RUN_LIMIT_SECONDS = 230
READY_LIMIT_SECONDS = 90
STOP_LIMIT_SECONDS = 40
WORKING_FOLDER = re.compile(r"working folder (\S+)")


def chaos_command(*arguments: str) -> list[str]:
    return [sys.executable, "-m", "services.cli", "chaos", *arguments]


def chaos_environment() -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ORDERFLOW_")}
    env["PYTHONUNBUFFERED"] = "1"
    return env


def processes_using(folder: str) -> list[str]:
    """Describe every live process whose command line, working folder or settings name `folder`."""
    found = []
    for process in psutil.process_iter(["pid", "cmdline", "cwd", "environ", "status"]):
        info = process.info
        if info["status"] == psutil.STATUS_ZOMBIE:
            continue
        texts = [*(info["cmdline"] or []), info["cwd"] or "", *(info["environ"] or {}).values()]
        if any(folder in text for text in texts):
            found.append(f"{info['pid']}: {' '.join(info['cmdline'] or [])[:120]}")
    return found


@pytest.fixture(scope="module")
def chaos_run() -> Iterator[subprocess.CompletedProcess[str]]:
    result = subprocess.run(
        chaos_command("--duration", str(CHAOS_DURATION_SECONDS), "--rate", str(CHAOS_RATE)),
        cwd=REPOSITORY_ROOT,
        env=chaos_environment(),
        capture_output=True,
        text=True,
        timeout=RUN_LIMIT_SECONDS,
        check=False,
    )
    yield result
    if result.returncode != 0:
        print(result.stdout[-20000:])
        print(result.stderr[-5000:])


@pytest.mark.timeout(RUN_LIMIT_SECONDS + 20)
def test_chaos_run_passes_when_faults_injected(
    chaos_run: subprocess.CompletedProcess[str],
) -> None:
    assert chaos_run.returncode == 0, chaos_run.stdout[-6000:]
    assert "chaos result: PASS" in chaos_run.stdout
    assert "FAIL" not in chaos_run.stdout


@pytest.mark.timeout(RUN_LIMIT_SECONDS + 20)
def test_chaos_report_lists_every_fault_kind(
    chaos_run: subprocess.CompletedProcess[str],
) -> None:
    faults = chaos_run.stdout.partition("Faults injected")[2].partition("Recovery after")[0]
    recovery = chaos_run.stdout.partition("Recovery after")[2].partition("\nLoad\n")[0]

    for kind in FAULT_KINDS:
        assert re.search(rf"\+\s*[\d.]+ s \S+\s+{re.escape(kind)} ", faults), kind
        assert re.search(rf"^\s+{re.escape(kind)}\s", recovery, re.MULTILINE), kind


@pytest.mark.timeout(RUN_LIMIT_SECONDS + 20)
def test_chaos_run_leaves_nothing_when_finished(
    chaos_run: subprocess.CompletedProcess[str],
) -> None:
    match = WORKING_FOLDER.search(chaos_run.stdout)
    assert match is not None, chaos_run.stdout[:500]
    folder = match.group(1)

    assert not Path(folder).exists()
    assert processes_using(folder) == []


@pytest.mark.timeout(READY_LIMIT_SECONDS + STOP_LIMIT_SECONDS + 20)
def test_chaos_stops_everything_when_interrupted() -> None:
    process = subprocess.Popen(
        chaos_command("--duration", "60", "--rate", "2"),
        cwd=REPOSITORY_ROOT,
        env=chaos_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        assert process.stdout is not None
        lines = []
        deadline = time.monotonic() + READY_LIMIT_SECONDS
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if line.startswith("system ready") or not line:
                break
        assert lines[-1].startswith("system ready"), "".join(lines)
        match = WORKING_FOLDER.search(lines[0])
        assert match is not None, lines[0]
        descendants = psutil.Process(process.pid).children(recursive=True)
        assert len(descendants) >= 10  # eight orderflow processes and two servers

        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=STOP_LIMIT_SECONDS)
    finally:
        if process.poll() is None:
            # Kill the whole tree, so a run that ignored the interrupt leaves nothing behind.
            for child in psutil.Process(process.pid).children(recursive=True):
                child.kill()
            process.kill()
            process.wait()

    assert process.returncode == 130, output[-3000:]
    assert "interrupted: stopping every process and server" in output
    assert [child.pid for child in descendants if _alive(child)] == []
    assert not Path(match.group(1)).exists()


def _alive(process: psutil.Process) -> bool:
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
