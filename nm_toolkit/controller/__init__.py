"""The SDN controller side: decisions that passed the guardrails become switch state.

* :mod:`~nm_toolkit.controller.openflow`  all OpenFlow 1.3 encoding (decision -> plan -> messages)
* :mod:`~nm_toolkit.controller.engine`    desired state -> switches; TTL expiry; reconciliation
* :mod:`~nm_toolkit.controller.osken_app` the os-ken app (event handlers only)
* :mod:`~nm_toolkit.controller.runtime`   starting os-ken in this process
* :mod:`~nm_toolkit.controller.onos`, :mod:`~nm_toolkit.controller.faucet`,
  :mod:`~nm_toolkit.controller.topic`     the other adapters
* :mod:`~nm_toolkit.controller.service`   one round: policies -> guardrails -> adapters
* :mod:`~nm_toolkit.controller.runner`    ``nmt controller run``

Configuration (``nmt.toml``)::

    [controller]
    adapter = "openflow"                 # openflow | onos | faucet | kafka
    listen_port = 6653
    bandwidth_unit_kbps = 1000.0         # series in Mbit/s
    [controller.targets]                 # which traffic a cell or link is
    "cell-0001" = { ipv4_dst = "10.0.1.0/24" }
    [controller.guardrails]
    max_changes_per_minute = 120
    tenants = { acme = ["cell-0001"] }
    [controller.policy_params.edge_autoscale]
    prompts_per_replica = 8.0
"""
