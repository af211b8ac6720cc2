"""The project's performance targets and how far a result is from each."""

from typing import Any

INTAKE_TARGET_PER_S = 2500.0  # orders accepted per second with p99 under 50 ms, no errors
E2E_TARGET_PER_S = 1000.0  # orders fully processed per second...
E2E_TARGET_P99_S = 2.0  # ...with p99 from acceptance to fully processed under this
DRAIN_TARGET_S = 60.0  # demo profile: backlog gone within this long after the load ends
RSS_TARGET_MB = 150.0  # resident memory of each process of the system
SYSTEM_ROLES = (
    "gateway",
    "relay",
    "payments",
    "inventory",
    "notifications",
    "analytics",
    "smtp-catcher",
)


def evaluate_targets(result: dict[str, Any]) -> list[dict[str, Any]]:
    """Return each target this scenario measures with `met`, `not met` and by how much."""
    targets: list[dict[str, Any]] = []
    scenario = result["scenario"]
    if scenario == "intake":
        targets.append(_intake(result))
    elif scenario == "e2e":
        targets.append(_e2e(result))
    elif scenario == "demo":
        targets.append(_drain(result))
    memory = _memory(result.get("processes", {}))
    if memory is not None:
        targets.append(memory)
    return targets


def _rate_target(name: str, goal: float, measured: float, condition: str) -> dict[str, Any]:
    share = measured / goal
    share_text = f"{share:.1%}" if share < 0.1 else f"{share:.0%}"
    status = "met" if measured >= goal else "not met"
    return {
        "name": name,
        "status": status,
        "detail": f"{measured:,.0f}/s {condition} is {share_text} of the {goal:,.0f}/s target",
    }


def _intake(result: dict[str, Any]) -> dict[str, Any]:
    passed = [step for step in result.get("steps", []) if step["passed"]]
    measured = max((step["accepted_per_s"] for step in passed), default=0.0)
    goal = INTAKE_TARGET_PER_S
    return _rate_target("intake", goal, measured, "accepted with p99 < 50 ms")


def _e2e(result: dict[str, Any]) -> dict[str, Any]:
    qualifying = [
        step
        for step in result.get("steps", [])
        if step["passed"]
        and step["e2e"]["fully_processed_s"].get("p99", float("inf")) < E2E_TARGET_P99_S
    ]
    measured = max((step["accepted_per_s"] for step in qualifying), default=0.0)
    condition = f"fully processed with p99 < {E2E_TARGET_P99_S:g} s"
    return _rate_target("e2e", E2E_TARGET_PER_S, measured, condition)


def _drain(result: dict[str, Any]) -> dict[str, Any]:
    drain = result.get("drain_s")
    if drain is None:
        return {
            "name": "drain",
            "status": "not met",
            "detail": "the backlog did not drain before the bench stopped waiting",
        }
    status = "met" if drain <= DRAIN_TARGET_S else "not met"
    return {
        "name": "drain",
        "status": status,
        "detail": f"drained in {drain:g} s against {DRAIN_TARGET_S:g} s "
        f"({drain / DRAIN_TARGET_S:.1f}x the target)",
    }


def _memory(processes: dict[str, dict[str, float]]) -> dict[str, Any] | None:
    measured = {role: processes[role]["rss_max_mb"] for role in SYSTEM_ROLES if role in processes}
    if not measured:
        return None
    largest = max(measured, key=measured.__getitem__)
    status = "met" if measured[largest] < RSS_TARGET_MB else "not met"
    return {
        "name": "memory",
        "status": status,
        "detail": f"largest RSS {measured[largest]:.0f} MB ({largest}) against "
        f"{RSS_TARGET_MB:.0f} MB per process",
    }
