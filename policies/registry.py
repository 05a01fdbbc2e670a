"""Discovery of policies through the ``nm_toolkit.policies`` entry-point group, and running them
so that one failing policy never stops the others."""

from __future__ import annotations

from nm_toolkit.errors import UserError

import logging
from importlib.metadata import entry_points

from nm_toolkit.schemas import Decision
from policies.base import Policy, PolicyContext

ENTRY_POINT_GROUP = "nm_toolkit.policies"
log = logging.getLogger(__name__)


class UnknownPolicyError(UserError):
    """A configured policy name has no entry point."""


def available_policies() -> dict[str, str]:
    """Name -> ``module:object`` of every installed policy."""
    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def load_policies(names: list[str]) -> list[Policy]:
    """Instantiate the named policies, in the given order."""
    found = {ep.name: ep for ep in entry_points(group=ENTRY_POINT_GROUP)}
    policies: list[Policy] = []
    for name in names:
        if name not in found:
            raise UnknownPolicyError(
                f"no policy named {name!r}; installed: {', '.join(sorted(found)) or 'none'} "
                "(fix policy.enabled in nmt.toml)"
            )
        policies.append(found[name].load()())
    return policies


def run_policies(policies: list[Policy], context: PolicyContext) -> list[Decision]:
    """Every policy's decisions, in order; a policy that raises is logged and skipped."""
    decisions: list[Decision] = []
    for policy in policies:
        try:
            decisions.extend(policy.decide(context))
        except Exception:
            log.exception("policy %s failed and was skipped", policy.name)
    return decisions
