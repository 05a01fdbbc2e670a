"""Discovery of policies through the ``nm_toolkit.policies`` entry-point group, and running them
so that one failing or slow policy never stops the others."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Any, Literal

from nm_toolkit.errors import UserError
from nm_toolkit.schemas import Decision
from policies.base import Policy, PolicyContext

ENTRY_POINT_GROUP = "nm_toolkit.policies"
log = logging.getLogger(__name__)


class UnknownPolicyError(UserError):
    """A configured policy name has no entry point."""


class PolicyParamsError(UserError):
    """``controller.policy_params`` names arguments a policy does not take."""


def available_policies() -> dict[str, str]:
    """Name -> ``module:object`` of every installed policy."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_policies(names: Sequence[str], params: Mapping[str, Mapping[str, Any]] | None = None) -> list[Policy]:
    """Instantiate the named policies, in the given order, with their configured parameters.

    A plug-in whose code fails to import is logged and left out (the others still load); a name
    with no entry point at all is a configuration mistake and raises.
    """
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    params = params or {}
    policies: list[Policy] = []
    for name in names:
        if name not in found:
            raise UnknownPolicyError(
                f"no policy named {name!r}; installed: {', '.join(sorted(found)) or 'none'} "
                "(fix policy.enabled in nmt.toml, or install the package that provides it)"
            )
        try:
            cls = found[name].load()
        except Exception:
            log.exception("policy plug-in %s (%s) failed to load and was skipped", name, found[name].value)
            continue
        try:
            policy = cls(**params.get(name, {}))
        except TypeError as exc:
            raise PolicyParamsError(
                f"policy {name!r} rejected its parameters {dict(params.get(name, {}))}: {exc} "
                "(fix controller.policy_params in nmt.toml)"
            ) from exc
        policy.name = name
        policies.append(policy)
    return policies


@dataclass(frozen=True)
class PolicyRun:
    """What one policy did in one evaluation; ``decisions`` is empty unless ``status`` is ok."""

    policy: str
    status: Literal["ok", "failed", "overrun"]
    elapsed_s: float
    decisions: list[Decision] = field(default_factory=list)
    error: str = ""


def evaluate_policy(policy: Policy, context: PolicyContext, time_budget_s: float | None) -> PolicyRun:
    """Run ``policy.decide`` on a daemon thread and wait at most ``time_budget_s``.

    An overrunning policy cannot be killed (Python threads cannot be), but its result is
    ignored and the loop moves on; a daemon thread never keeps the process alive.
    """
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["decisions"] = list(policy.decide(context))
        except Exception as exc:  # a policy's bug must not stop the loop
            box["error"] = exc

    start = time.perf_counter()
    if time_budget_s is None:
        target()
    else:
        worker = threading.Thread(target=target, name=f"policy-{policy.name}", daemon=True)
        worker.start()
        worker.join(time_budget_s)
    elapsed = time.perf_counter() - start
    if "error" in box:
        error = box["error"]
        log.error("policy %s failed and was skipped: %r", policy.name, error, exc_info=error)
        return PolicyRun(policy.name, "failed", elapsed, error=f"{type(error).__name__}: {error}")
    if "decisions" not in box:
        log.error("policy %s overran its %.3f s budget and was skipped", policy.name, time_budget_s)
        return PolicyRun(policy.name, "overrun", elapsed, error=f"exceeded the {time_budget_s:g} s time budget")
    return PolicyRun(policy.name, "ok", elapsed, box["decisions"])


def evaluate_policies(
    policies: Sequence[Policy], context: PolicyContext, time_budget_s: float | None = None
) -> list[PolicyRun]:
    """One :class:`PolicyRun` per policy, in order."""
    return [evaluate_policy(policy, context, time_budget_s) for policy in policies]


def run_policies(
    policies: Sequence[Policy], context: PolicyContext, time_budget_s: float | None = None
) -> list[Decision]:
    """Every policy's decisions, in order; a policy that raises or overruns is logged and skipped."""
    return [d for run in evaluate_policies(policies, context, time_budget_s) for d in run.decisions]
