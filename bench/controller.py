"""Controller benchmark: decisions per second through the guardrails, and decision-to-flow-
installed latency against a real Open vSwitch, each next to a baseline measured in the same run.

    python bench/controller.py [--decisions 20000] [--samples 300]

* throughput: ``Guardrails.check`` on a batch of mixed decisions (ACLs, reservations, rate
  limits; some conflicting, some over capacity, some blocking all traffic), versus the baseline
  of only parsing the same decisions from their JSON wire form (what reading them off the
  decisions topic costs anyway).
* latency: one decision at a time through ``DecisionController.apply`` (guardrails, desired
  state, OpenFlow encoding) to the os-ken app and the switch, until the switch's barrier reply
  says the meter and flow are installed; versus the baseline of the same flow-mod and meter-mod,
  pre-encoded, sent straight down the same OpenFlow channel with the same barrier wait.
  Samples alternate between the two so load on the machine hits both alike.
"""

from __future__ import annotations

import argparse
import os
import random
import socket
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("OSKEN_HUB_TYPE", "native")

from os_ken.ofproto import ofproto_protocol, ofproto_v1_3  # noqa: E402

from nm_toolkit.config import ControllerSettings, GuardrailSettings, Settings  # noqa: E402
from nm_toolkit.controller import openflow  # noqa: E402
from nm_toolkit.controller.runtime import start_openflow_controller  # noqa: E402
from nm_toolkit.controller.service import DecisionController  # noqa: E402
from nm_toolkit.devtools.ovs import OpenVSwitch  # noqa: E402
from nm_toolkit.schemas import Acl, Decision, DecisionAdapter, RateLimit, Reservation  # noqa: E402
from policies.guardrails import Guardrails  # noqa: E402


def mixed_decisions(n: int, seed: int = 0) -> list[Decision]:
    rng = random.Random(seed)
    out: list[Decision] = []
    for i in range(n):
        cell = f"cell-{rng.randrange(1000):04d}"
        kind = rng.random()
        common = {"idempotency_key": f"k{i}", "policy": "bench", "target": cell, "reason": "bench",
                  "priority": rng.randrange(50, 500)}
        if kind < 0.4:
            match = {} if rng.random() < 0.01 else {"tcp_dst": rng.randrange(1, 2000), "ipv4_src": f"10.{i % 250}.0.0/16"}
            out.append(Acl(action=rng.choice(["allow", "deny"]), match=match, **common))
        elif kind < 0.7:
            bandwidth = rng.uniform(10, 110)
            out.append(Reservation(bandwidth=bandwidth, capacity=100.0, forecast_peak=bandwidth / 1.1, **common))
        else:
            out.append(RateLimit(rate_kbps=rng.uniform(100, 10_000), **common))
    return out


def throughput(n: int, repeats: int = 3) -> tuple[float, float, dict[str, int]]:
    decisions = mixed_decisions(n)
    wire = [DecisionAdapter.dump_json(d) for d in decisions]
    rails = Guardrails(GuardrailSettings(max_changes_per_minute=10**9), lambda _target: 100.0)
    best_check = best_parse = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        for raw in wire:
            DecisionAdapter.validate_json(raw)
        best_parse = min(best_parse, time.perf_counter() - started)
        started = time.perf_counter()
        report = rails.check(decisions)
        best_check = min(best_check, time.perf_counter() - started)
    rejected: dict[str, int] = {}
    for rejection in report.rejected:
        rejected[rejection.rule] = rejected.get(rejection.rule, 0) + 1
    return n / best_check, n / best_parse, rejected


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def latency(samples: int) -> tuple[list[float], list[float], int]:
    targets = {f"cell-{i:04d}": {"ipv4_dst": f"10.{i // 250}.{i % 250}.0/24"} for i in range(samples)}
    controller_settings = ControllerSettings(listen_port=free_port(), targets=targets, expiry_interval_seconds=1.0)
    engine = start_openflow_controller(controller_settings)
    settings = Settings(controller=controller_settings, policy={"default_capacity": 1e9})
    settings.controller.guardrails.max_changes_per_minute = 10 * samples
    controller = DecisionController(settings, [], [engine])
    measured, baseline = [], []
    with OpenVSwitch() as ovs:
        ovs.add_bridge("br-bench", controller=f"tcp:127.0.0.1:{controller_settings.listen_port}", datapath_id=7)
        if not engine.wait_for_switches(1, 30):
            raise SystemExit("the bridge did not connect to the controller")
        (dpid,) = engine.datapath_ids
        encoder = ofproto_protocol.ProtocolDesc(ofproto_v1_3.OFP_VERSION)  # encodes like the switch's datapath
        for i in range(samples):
            decision = RateLimit(idempotency_key=f"lat-{i}", policy="bench", target=f"cell-{i:04d}",
                                 reason="bench", rate_kbps=1000 + i)
            raw_plan = openflow.FlowPlan(
                cookie=10**6 + i, priority=900, match=openflow.normalize_match({"ipv4_src": f"172.16.{i // 250}.{i % 250}"}),
                action="normal", meter=openflow.MeterPlan(100_000 + i, 1000 + i),
            )
            raw = openflow.install_messages(encoder, raw_plan)
            started = time.perf_counter()
            controller.apply([decision])
            assert engine.flush(10)
            measured.append(time.perf_counter() - started)
            started = time.perf_counter()
            engine.send_raw(dpid, raw)
            assert engine.flush(10)
            baseline.append(time.perf_counter() - started)
        installed = sum("meter:" in flow for flow in ovs.dump_flows("br-bench"))
    return measured, baseline, installed


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--decisions", type=int, default=20_000)
    parser.add_argument("--samples", type=int, default=300)
    args = parser.parse_args()

    checked, parsed, rejected = throughput(args.decisions)
    print(f"guardrails: {checked:,.0f} decisions/s   baseline (parse JSON only): {parsed:,.0f} decisions/s"
          f"   [{args.decisions} decisions, best of 3; rejected: {rejected}]")
    measured, baseline, installed = latency(args.samples)
    ms = 1000.0
    print(f"decision->flow installed: p50 {percentile(measured, 50) * ms:.2f} ms  p99 {percentile(measured, 99) * ms:.2f} ms"
          f"   baseline (raw flow-mod+meter-mod+barrier): p50 {percentile(baseline, 50) * ms:.2f} ms"
          f"  p99 {percentile(baseline, 99) * ms:.2f} ms   [{args.samples} samples each; "
          f"{installed} metered flows on the bridge at the end]")


if __name__ == "__main__":
    main()
