"""Real Faucet (1.10.12, its own process from its own virtualenv) on the YAML the Faucet adapter
writes, controlling a real Open vSwitch bridge: the decisions become Faucet's flows and meters on
the switch, and a change to the decisions reaches the switch through Faucet's reload."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
import yaml

from nm_toolkit.config import ControllerSettings
from nm_toolkit.controller.faucet import FaucetAdapter, acl_name
from nm_toolkit.devtools.faucet import FaucetProcess, FaucetProvisionError, ensure_faucet_venv
from nm_toolkit.devtools.ovs import OpenVSwitch, ovs_available
from nm_toolkit.schemas import Acl, RateLimit
from tests.test_controller_ovs import wait_until

pytestmark = [
    pytest.mark.ovs,
    pytest.mark.skipif(not ovs_available(), reason="needs openvswitch-switch (make test installs it)"),
]
BRIDGE = "br-faucet"
DP = "edge-sw1"
TARGETS = {"cell-1": {"ipv4_dst": "10.0.1.0/24"}}


@pytest.fixture(scope="module")
def faucet_bin() -> Path:
    try:
        return ensure_faucet_venv()
    except FaucetProvisionError as exc:  # no network to PyPI: nothing to run Faucet from
        pytest.skip(f"Faucet's virtualenv cannot be built here: {exc}")


@pytest.fixture
def adapter(tmp_path: Path) -> FaucetAdapter:
    settings = ControllerSettings(targets=TARGETS, faucet_config=tmp_path / "faucet-nmt.yaml", faucet_dp=DP)
    return FaucetAdapter(settings)


def deny_telnet() -> Acl:
    return Acl(idempotency_key="no-telnet", policy="t", target="cell-1", reason="t", action="deny",
               match={"tcp_dst": 23, "ipv4_src": "10.9.0.0/16"}, priority=500, created_at=datetime.now(UTC))


def cap(rate_kbps: float) -> RateLimit:
    return RateLimit(idempotency_key="cap", policy="t", target="cell-1", reason="t", rate_kbps=rate_kbps,
                     created_at=datetime.now(UTC))


@pytest.fixture
def faucet(faucet_bin: Path, adapter: FaucetAdapter, tmp_path: Path) -> Iterator[FaucetProcess]:
    """Faucet's main file, as an operator writes it: the datapath, its ports, and the adapter's
    file included, its ACL on every port's ingress (Faucet 1.10.12 does not reprogram a changed
    ``dp_acls`` ACL on a warm start; port ACLs it does). The decisions in force are in the
    adapter's file before Faucet starts."""
    assert [o.status for o in adapter.apply([deny_telnet(), cap(5000)])] == ["applied", "applied"]
    main = tmp_path / "faucet.yaml"
    main.write_text(yaml.safe_dump({
        "include": [adapter.path.name],
        "vlans": {"office": {"vid": 100}},
        "dps": {DP: {
            "dp_id": 1, "hardware": "Open vSwitch",
            "interfaces": {port: {"native_vlan": "office", "acls_in": [acl_name(DP)]} for port in (1, 2)},
        }},
    }))
    with FaucetProcess(main, tmp_path / "faucet", bin_dir=faucet_bin) as process:
        yield process


def flows(ovs: OpenVSwitch) -> list[str]:
    return ovs.dump_flows(BRIDGE)


def test_faucet_installs_the_adapters_acl_and_meter_and_follows_its_changes(
    faucet: FaucetProcess, adapter: FaucetAdapter
) -> None:
    log = faucet.log_tail
    with OpenVSwitch() as ovs:
        ovs.add_bridge(BRIDGE, controller=f"tcp:127.0.0.1:{faucet.port}", ports=2, datapath_id=1)
        for port in (f"{BRIDGE}-p1", f"{BRIDGE}-p2"):  # Faucet programs a port's ACL once it is up
            ovs.link_up(port)
        wait_until(lambda: any("tp_dst=23" in f for f in flows(ovs)), 120, "Faucet to install the ACL", log)
        wait_until(lambda: len([f for f in flows(ovs) if "tp_dst=23" in f]) == 2, 120, "the ACL on both ports", log)
        telnet = [f for f in flows(ovs) if "tp_dst=23" in f]  # one per port, as Faucet compiles port ACLs
        assert all("nw_src=10.9.0.0/16" in f and "actions=drop" in f for f in telnet), telnet
        assert {f.split("in_port=")[1].split(",")[0] for f in telnet} == {"1", "2"}
        capped = [f for f in flows(ovs) if "nw_dst=10.0.1.0/24" in f and "tp_dst" not in f]
        assert len(capped) == 2 and all("meter:1" in f for f in capped), capped
        assert "rate=5000" in ovs.dump_meters(BRIDGE)[1]

        # while the switch is connected: the deny is withdrawn and the cap revised; the adapter
        # rewrites its file and Faucet, reading it again by itself, changes the switch
        assert adapter.withdraw(["no-telnet"]) == ["no-telnet"]
        assert [o.status for o in adapter.apply([cap(7000)])] == ["applied"]
        wait_until(lambda: not any("tp_dst=23" in f for f in flows(ovs)), 120, "Faucet to remove the ACL's flow", log)
        wait_until(lambda: "rate=7000" in ovs.dump_meters(BRIDGE).get(1, ""), 120, "Faucet to change the meter", log)
        assert any("nw_dst=10.0.1.0/24" in f and "meter:1" in f for f in flows(ovs))
