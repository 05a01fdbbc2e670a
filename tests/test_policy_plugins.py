"""A third-party policy package (tests/plugins/nmt-example-policies), found only through its
``nm_toolkit.policies`` entry points; its broken policies must not stop the others."""

from __future__ import annotations

import importlib
import subprocess
import sys
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from nm_toolkit.schemas import RateLimit
from policies.registry import PolicyParamsError, UnknownPolicyError, available_policies, evaluate_policies, load_policies
from tests.test_policy_helpers import context, forecast

PLUGIN_DIR = Path(__file__).parent / "plugins" / "nmt-example-policies"


@pytest.fixture(scope="module", autouse=True)
def example_plugin_installed() -> None:
    """Install the example package into this interpreter once (idempotent, no network)."""
    if "example_cell_cap" not in {ep.name for ep in entry_points(group="nm_toolkit.policies")}:
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation", "-e", str(PLUGIN_DIR)],
            check=True, capture_output=True,
        )
        importlib.invalidate_caches()


def test_plugin_policies_are_discovered_by_entry_point() -> None:
    found = available_policies()
    assert found["example_cell_cap"] == "nmt_example_policies:CellCapPolicy"
    assert "bandwidth_reservation" in found


def test_failing_plugins_do_not_stop_the_others(caplog: pytest.LogCaptureFixture) -> None:
    names = ["example_unimportable", "example_broken", "example_slow", "example_cell_cap", "bandwidth_reservation"]
    policies = load_policies(names, params={"example_slow": {"seconds": 2.0}, "example_cell_cap": {"share": 0.25}})
    assert [p.name for p in policies] == names[1:]  # the unimportable one is logged and left out
    assert "example_unimportable" in caplog.text
    ctx = context(capacities={"cell-1": 100.0}, forecasts={"cell-1|mbps": forecast("cell-1|mbps", [95.0])})
    runs = {run.policy: run for run in evaluate_policies(policies, ctx, time_budget_s=0.5)}
    assert runs["example_broken"].status == "failed" and "broken on purpose" in runs["example_broken"].error
    assert runs["example_slow"].status == "overrun"
    (cap,) = runs["example_cell_cap"].decisions
    assert isinstance(cap, RateLimit) and cap.rate_kbps == 25_000 and cap.policy == "example_cell_cap"
    assert [d.target for d in runs["bandwidth_reservation"].decisions] == ["cell-1"]


def test_unknown_names_and_bad_parameters_are_user_errors() -> None:
    with pytest.raises(UnknownPolicyError, match="policy.enabled"):
        load_policies(["no_such_policy"])
    with pytest.raises(PolicyParamsError, match="controller.policy_params"):
        load_policies(["example_cell_cap"], params={"example_cell_cap": {"sharez": 1}})
