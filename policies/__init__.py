"""Policies turn forecasts and intents into decisions; third parties add theirs by entry point."""

from policies.base import Policy, PolicyContext
from policies.registry import load_policies, run_policies

__all__ = ["Policy", "PolicyContext", "load_policies", "run_policies"]
