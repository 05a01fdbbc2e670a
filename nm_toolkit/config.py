"""One typed settings object for the whole toolkit.

Values come, in increasing priority, from the defaults below, a TOML file (``nmt.toml`` in the
working directory, or the path in ``NMT_CONFIG``), and ``NMT_*`` environment variables with
``__`` between nested names (``NMT_BUS__KIND=kafka``, ``NMT_BUS__BOOTSTRAP_SERVERS=127.0.0.1:9092``).
"""

from __future__ import annotations

import os
import re
from contextvars import ContextVar
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, Field, PositiveFloat, PositiveInt, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from nm_toolkit.errors import UserError

DEFAULT_CONFIG_FILE = "nmt.toml"
_explicit_config: ContextVar[Path | None] = ContextVar("nmt_config_file", default=None)


def default_state_dir() -> Path:
    """Where collectors checkpoint window state and the forecast store lives by default."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "nm-toolkit"


def default_cache_dir() -> Path:
    """Where what is the same for every deployment on a machine is kept between runs: fetched and
    built models, the built-in intent extractor (``XDG_CACHE_HOME`` respected)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "nm-toolkit"


class BusSettings(BaseModel):
    """Which message bus carries the loop: the in-process one or a Kafka cluster."""

    kind: Literal["embedded", "kafka"] = "embedded"
    bootstrap_servers: str = "127.0.0.1:9092"
    client_id: str = "nm-toolkit"
    default_partitions: PositiveInt = 4
    max_message_bytes: PositiveInt = Field(
        default=1_048_576, description="the broker's message.max.bytes: dead letters are cut to fit under it"
    )
    session_timeout_ms: int = Field(
        default=6_000, ge=6_000, description="how long a silent member keeps its partitions (the broker's minimum is 6 s)"
    )
    heartbeat_interval_ms: int = Field(default=2_000, ge=100, description="a third of the session timeout, as Kafka advises")
    group_instance_id: str | None = Field(
        default=None,
        description="static group membership (KIP-345): a member restarted with the same id takes its partitions "
        "back at once instead of after the session timeout; give each process its own id",
    )


class MetricsSettings(BaseModel):
    """The Prometheus endpoint of long-running services (``--metrics-port`` overrides the port)."""

    host: str = "127.0.0.1"
    port: int | None = Field(default=None, ge=0, le=65535, description="None: no endpoint; 0: any free port")


class TopicSettings(BaseModel):
    """Topic names; one place so that every service agrees on them."""

    telemetry: str = "nmt.telemetry"
    dead_letter: str = "nmt.telemetry.dlq"
    late: str = "nmt.telemetry.late"
    series: str = "nmt.series"
    forecasts: str = "nmt.forecasts"
    decisions: str = "nmt.decisions"
    prompts: str = "nmt.prompts"
    cloud_requests: str = Field(default="nmt.cloud.requests", description="completed prompts the edge escalated, and link probes")
    cloud_status: str = Field(default="nmt.cloud.status", description="the cloud's probe echoes: queue and service time")
    answers: str = Field(default="nmt.answers", description="one answer per prompt, keyed by request id, whichever path served it")
    intents: str = Field(default="nmt.intents", description="network intents in force (NetworkIntent), keyed by id")
    intent_results: str = Field(
        default="nmt.intents.results", description="the intent service's answer to every prompt and operator text"
    )
    operator_intents: str = "nmt.intents.operator"
    dead_letter_replays: str = Field(
        default="nmt.dlq.replayed", description="the dead letters `nmt dead-letters replay` sent back, keyed by their position"
    )

    def tables(self) -> list[str]:
        """The changelog topics whose latest value per key is the state (forecasts per series,
        intents in force, decisions by key, the dead letters replayed): created compacted, so that what is in force outlives
        the broker's retention and a null value (tombstone) retracts it."""
        return [self.forecasts, self.intents, self.decisions, self.dead_letter_replays]


class CollectorSettings(BaseModel):
    """Windowing and delivery parameters of the telemetry collector."""

    group_id: str = "nmt-collector"
    window_seconds: PositiveInt = 3600
    allowed_lateness_seconds: float = Field(default=0.0, ge=0)
    idle_close_seconds: PositiveFloat | None = Field(
        default=None,
        description="close every open window once no record arrived for this long (processing time)",
    )
    max_poll_records: PositiveInt = 2000
    max_message_bytes: PositiveInt = 1_048_576
    checkpoint_interval_seconds: PositiveFloat = 1.0
    min_timestamp: str = "2000-01-01T00:00:00Z"
    max_future_seconds: PositiveFloat = 86_400.0


class GnmiTargetSettings(BaseModel):
    """One device that `nmt collect gnmi` subscribes to: where it is, how to reach it, what to ask for."""

    name: str = Field(min_length=1, description="the device's name: prefix.target of its notifications, the first part of its series' source")
    address: str = Field(min_length=1, description="host:port of the device's gNMI server")
    paths: list[str] = Field(
        default_factory=lambda: ["/interfaces/interface/state/counters"], min_length=1,
        description="paths to subscribe to, keys in brackets: /interfaces/interface[name=eth0]/state/counters",
    )
    mode: Literal["sample", "on_change"] = Field(default="sample", description="SAMPLE every sample_interval_seconds, or ON_CHANGE")
    sample_interval_seconds: PositiveFloat = 10.0
    insecure: bool = Field(default=False, description="plaintext gRPC without TLS (lab devices only)")
    ca_cert: Path | None = Field(default=None, description="PEM file of the CA that signed the device's certificate (default: the system's roots)")
    client_cert: Path | None = Field(default=None, description="PEM client certificate for devices that require one (with client_key)")
    client_key: Path | None = None
    server_name: str | None = Field(default=None, description="the name in the device's certificate, where it is not the address's host")
    username: str | None = None
    password: str | None = None


class GnmiSettings(BaseModel):
    """`nmt collect gnmi`: subscribes to gNMI targets and publishes their notifications to the telemetry topic."""

    targets: list[GnmiTargetSettings] = Field(default_factory=list)
    encoding: Literal["proto", "json", "json_ietf"] = Field(default="proto", description="the encoding asked of every target")
    retry_initial_seconds: PositiveFloat = Field(default=1.0, description="the first wait before reconnecting to a target")
    retry_max_seconds: PositiveFloat = Field(default=60.0, description="the longest wait between reconnections (the back-off doubles up to it)")
    max_retries: int | None = Field(
        default=None, ge=0, description="failed connections in a row after which a target is given up (None: keep trying)"
    )


def _month_day_range(text: str) -> str:
    """A yearly break as the settings take it: MM-DD..MM-DD (the day itself is checked where used)."""
    if not re.fullmatch(r"\d\d-\d\d\.\.\d\d-\d\d", text):
        raise ValueError(f"{text!r} is not MM-DD..MM-DD: write e.g. 12-23..01-06")
    return text


class ForecastSettings(BaseModel):
    """Defaults of the forecasting step of the loop."""

    horizon: PositiveInt = 24
    season_length: PositiveInt = 24
    min_history: PositiveInt = 24
    max_history: PositiveInt = 24 * 7 * 8
    value: Literal["sum", "mean", "max"] = Field(
        default="sum", description="which window aggregate is the series value: sum for counts, mean for gauges"
    )
    level: float = Field(default=0.9, gt=0, lt=1)
    holidays: str | None = Field(
        default=None,
        description="public holidays of this place (ISO 3166 code, optionally with a subdivision: IT, IT-MI, US-CA): "
        "the day_type model, and the ensemble through it, forecast them as Sundays; none: weekends only",
    )
    breaks: list[Annotated[str, AfterValidator(_month_day_range)]] = Field(
        default_factory=list,
        description="yearly breaks, MM-DD..MM-DD (Milan's Christmas school break: 12-23..01-06): day_type forecasts their "
        "working days, as it does a bridge between a holiday and a weekend, halfway between a working day and a Saturday",
    )
    zero_fill_metrics: list[str] = Field(
        default_factory=lambda: ["demand.*"],
        description="metrics (glob patterns) counted from events, such as intent demand: a window that never "
        "arrived had no events, so it is 0, not an outage to repair",
    )


class ForecastServiceSettings(BaseModel):
    """The forecasting service: its consumer group, model, schedule, store and retention."""

    group_id: str = "nmt-forecaster"
    model: str = "ensemble"
    interval_seconds: PositiveFloat = 300.0
    dead_letter_topic: str = "nmt.series.dlq"
    max_poll_records: PositiveInt = 5000
    store_path: Path | None = Field(default=None, description="SQLite file; default: state_dir/forecasts.sqlite")
    retention_days: PositiveFloat = 30.0
    refit_every_rounds: PositiveInt = Field(
        default=12,
        description="refit the models on the stored history every N rounds (and on a restart or a new series); "
        "in between, models with incremental updates take in only the windows that arrived since the last round",
    )


class PolicySettings(BaseModel):
    """Enabled policies, in the order they run, and the capacities they plan against."""

    enabled: list[str] = Field(default_factory=lambda: ["bandwidth_reservation"])
    default_capacity: PositiveFloat = 1.0e6
    capacities: dict[str, float] = Field(default_factory=dict)
    reserve_share: float = Field(default=0.8, gt=0, le=1)
    headroom: float = Field(default=0.1, ge=0)
    decision_ttl_seconds: PositiveFloat = 3600.0
    dry_run: bool = False
    sites: dict[str, list[str]] = Field(
        default_factory=dict,
        description="edge site -> the locations (cells) it serves, as shell patterns; the first site that matches serves a "
        "location. Demand-driven decisions (scale_compute, place_adapter) target the serving site. Empty: llm.edge_site "
        "serves every location (one edge site for the whole synthetic city)",
    )
    class_adapters: dict[str, str] = Field(
        default_factory=lambda: {"*": "completion"},
        description="service class (shell pattern, first match wins) -> the edge adapter that serves its requests; "
        "default: the edge's completion adapter serves every class",
    )


class GuardrailSettings(BaseModel):
    """Checks every decision passes before anything is applied (see policies.guardrails)."""

    max_changes_per_minute: PositiveInt = 120
    controller_ports: list[int] = Field(default_factory=lambda: [6653, 6633])
    controller_addresses: list[str] = Field(
        default_factory=lambda: ["127.0.0.1/32"],
        description="addresses at either end of the OpenFlow channel: controllers and switch management",
    )
    tenants: dict[str, list[str]] = Field(
        default_factory=dict, description="tenant -> the targets its intents may touch"
    )
    operator_tenants: list[str] = Field(
        default_factory=lambda: ["operator"],
        description="tenants with authority over every target: the network's own operators (intent.default_tenant)",
    )


class QueueClass(BaseModel):
    """One switch queue: HTB's min-rate (a guarantee), max-rate (a cap) and priority (0 borrows first)."""

    min_kbps: PositiveFloat | None = None
    max_kbps: PositiveFloat | None = None
    priority: int | None = Field(default=None, ge=0)


class QueueSettings(BaseModel):
    """The port queues the OpenFlow controller keeps in OVSDB, so every ``set_queue`` names a queue
    that exists: one per reservation (min-rate its bandwidth, max-rate its link's capacity) and
    one per QoS class a ``qos_queue`` decision names."""

    ovsdb: str = Field(
        default="unix:/var/run/openvswitch/db.sock",
        description="the switches' OVSDB (ovs-vsctl --db): unix:PATH or tcp:HOST:PORT; empty: queue decisions are unsupported",
    )
    ports: list[str] = Field(default_factory=list, description="ports that get the queues; empty: every port of every bridge")
    qos_type: str = Field(default="linux-htb", description="the QoS row's type (linux-htb, linux-hfsc; egress-policer on DPDK)")
    port_max_kbps: PositiveFloat | None = Field(default=None, description="the ports' line rate (QoS max-rate); default: what OVS reads")
    first_reservation_queue: PositiveInt = Field(default=8, description="reservations get queue ids from here up; below are the classes'")
    classes: dict[int, QueueClass] = Field(
        default_factory=lambda: {0: QueueClass(priority=3), 1: QueueClass(priority=2), 2: QueueClass(priority=1), 3: QueueClass(priority=0)},
        description="queue id -> its rates; the ids intent_qos_acl gives background, best_effort, high, critical (queue 0 also carries unmarked traffic)",
    )


class ControllerSettings(BaseModel):
    """The SDN controller side: which adapter applies decisions, and how targets map to flows."""

    adapter: Literal["openflow", "onos", "faucet", "kafka"] = "openflow"
    group_id: str = "nmt-controller"
    dead_letter_topic: str = "nmt.decisions.dlq"
    interval_seconds: PositiveFloat = Field(default=60.0, description="seconds between decision rounds")
    forecast_max_age_seconds: PositiveFloat = Field(
        default=3600.0, description="forecasts issued longer ago than this are not decided on"
    )
    listen_host: str = "127.0.0.1"
    listen_port: int = Field(default=6653, ge=0, le=65535)
    targets: dict[str, dict[str, str | int]] = Field(
        default_factory=dict, description="target id (cell, link, site) -> OpenFlow match of its traffic"
    )
    next_hop_ports: dict[str, int] = Field(default_factory=dict, description='"node>next" -> output port')
    bandwidth_unit_kbps: PositiveFloat = Field(default=1000.0, description="kbit/s per unit of reserved bandwidth")
    queues: QueueSettings = Field(default_factory=QueueSettings)
    expiry_interval_seconds: PositiveFloat = 1.0
    policy_time_budget_seconds: PositiveFloat = 2.0
    policy_params: dict[str, dict[str, float | int | str | bool]] = Field(
        default_factory=dict, description="policy name -> keyword arguments of its constructor"
    )
    guardrails: GuardrailSettings = Field(default_factory=GuardrailSettings)
    onos_url: str = "http://127.0.0.1:8181/onos/v1"
    onos_user: str = "onos"
    onos_password: str = "rocks"
    onos_devices: list[str] = Field(default_factory=lambda: ["of:0000000000000001"])
    faucet_config: Path = Path("faucet-nmt.yaml")
    faucet_dp: str = Field(
        default="sw1", description="the Faucet datapath the decisions are for: its ACL is nmt-<dp>, for its dp_acls in faucet.yaml"
    )


class LlmSettings(BaseModel):
    """Edge and cloud language models and the prompt service; model paths default under ``state_dir/llm``."""

    edge_model: Path | None = None
    cloud_model: Path | None = None
    adapters_dir: Path | None = None
    cloud_adapters_dir: Path | None = Field(default=None, description="the cloud model's tenant adapters")
    context_store: Path | None = None
    group_id: str = Field(default="nmt-edge", description="the edge service's consumer group")
    dead_letter_topic: str = "nmt.prompts.dlq"
    quantize_edge: bool = Field(default=False, description="int8 dynamic quantisation of the edge model's base weights (see bench/serving.py)")
    edge_site: str = Field(default="edge-0", description="this edge site's name (probe echoes come back to it)")
    confidence_threshold: float = Field(
        default=0.9, ge=0, le=1, description="the router keeps a request at the edge when the edge model is at least this sure"
    )
    probe_interval_s: float = Field(default=2.0, ge=0, description="how often the edge probes the link to the cloud (0: never)")
    load_interval_s: float = Field(
        default=60.0, ge=0, description="how often the edge and cloud services report their load on the telemetry topic (0: never)"
    )
    service_class_confidence: float = Field(
        default=0.8, ge=0, le=1,
        description="the edge model's service class of a prompt stands from this confidence up; below it the keyword rules decide",
    )
    adapter_budget: PositiveInt = Field(default=8, description="LoRA adapters an edge site keeps loaded at once (place_adapter decisions fill it)")
    initial_replicas: int = Field(default=1, ge=0, description="edge replicas `nmt llm supervise` runs before any scale_compute decision")
    max_replicas: PositiveInt = Field(default=4, description="the most edge replicas `nmt llm supervise` runs, whatever a decision asks")
    cloud_site: str = Field(default="cloud", description="the cloud service's name in its load telemetry")
    cloud_group_id: str = "nmt-cloud"
    cloud_dead_letter_topic: str = "nmt.cloud.requests.dlq"
    max_batch: PositiveInt = 16
    max_prompt_chars: PositiveInt = 1000
    max_input_tokens: PositiveInt = 256
    max_new_tokens: PositiveInt = 64
    request_timeout_s: PositiveFloat = 30.0


class IntentServiceSettings(BaseModel):
    """The intent service: prompts and operator texts in, intents and demand series out."""

    group_id: str = "nmt-intent-service"
    extractor_dir: Path | None = Field(
        default=None, description="operator-intent extractor from `nmt intent train`; default: the built-in one, trained on first use and "
        "cached for the machine (~/.cache/nm-toolkit/intent-extractor)"
    )
    dead_letter_topic: str = "nmt.intents.dlq"
    default_tenant: str = Field(
        default="operator", description="tenant of operator intents that name none (see controller.guardrails.tenants)"
    )
    user_demand: Literal["edge", "keywords"] = Field(
        default="edge",
        description="who turns user prompts into service intents and demand: the edge LLM service (the class from "
        "its model's own output, keyword rules as fallback; this service then leaves the prompts topic alone), or "
        "this service by keyword rules (for a deployment without an edge LLM service)",
    )
    demand_topic: str = Field(
        default="nmt.intents.demand", description="per-request demand records, keyed by location, that are windowed into series"
    )
    window_seconds: PositiveInt = 3600
    allowed_lateness_seconds: float = Field(default=60.0, ge=0)
    idle_close_seconds: PositiveFloat | None = Field(
        default=None, description="close every open demand window once no request arrived for this long"
    )
    max_text_chars: int = Field(default=1000, gt=0, le=2000, description="longer prompts and operator texts are dead-lettered")
    max_poll_records: PositiveInt = 500


class Settings(BaseSettings):
    """The toolkit's configuration: see the module docstring for where values come from."""

    model_config = SettingsConfigDict(
        env_prefix="NMT_", env_nested_delimiter="__", extra="forbid", toml_file=DEFAULT_CONFIG_FILE
    )

    state_dir: Path = Field(default_factory=default_state_dir)
    bus: BusSettings = Field(default_factory=BusSettings)
    topics: TopicSettings = Field(default_factory=TopicSettings)
    collector: CollectorSettings = Field(default_factory=CollectorSettings)
    gnmi: GnmiSettings = Field(default_factory=GnmiSettings)
    forecast: ForecastSettings = Field(default_factory=ForecastSettings)
    forecast_service: ForecastServiceSettings = Field(default_factory=ForecastServiceSettings)
    policy: PolicySettings = Field(default_factory=PolicySettings)
    controller: ControllerSettings = Field(default_factory=ControllerSettings)
    llm: LlmSettings = Field(default_factory=LlmSettings)
    intent: IntentServiceSettings = Field(default_factory=IntentServiceSettings)
    metrics: MetricsSettings = Field(default_factory=MetricsSettings)

    @model_validator(mode="after")
    def _one_site_unless_declared(self) -> Settings:
        """Without a declared site map, the edge site this deployment runs serves every location."""
        if not self.policy.sites:
            self.policy.sites = {self.llm.edge_site: ["*"]}
        return self

    def dead_letter_topics(self) -> dict[str, str]:
        """Every stream service's dead-letter topic, by service, and the collectors' late records
        (behind a window already closed: the same headers, a reason and an origin): what ``nmt
        dead-letters`` reads."""
        return {
            "collector": self.topics.dead_letter,
            "late": self.topics.late,
            "forecast": self.forecast_service.dead_letter_topic,
            "controller": self.controller.dead_letter_topic,
            "edge": self.llm.dead_letter_topic,
            "cloud": self.llm.cloud_dead_letter_topic,
            "supervisor": f"{self.topics.decisions}.supervisor.dlq",
            "intent": self.intent.dead_letter_topic,
        }

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        toml_path = _explicit_config.get() or os.environ.get("NMT_CONFIG", DEFAULT_CONFIG_FILE)
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=toml_path),
        )


class ConfigError(UserError):
    """A configuration a user wrote is unusable; the message says how to fix it."""


def load_settings(config_file: Path | None = None, **overrides: object) -> Settings:
    """Load settings, optionally from an explicit TOML file, with keyword overrides on top."""
    if config_file is not None:
        if not config_file.is_file():
            raise ConfigError(f"config file {config_file} does not exist: pass an existing TOML file")
    token = _explicit_config.set(config_file)
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        first = str(exc).splitlines()
        raise ConfigError(
            f"invalid configuration: {' '.join(first[1:3]).strip()} (check nmt.toml and NMT_* variables)"
        ) from exc
    finally:
        _explicit_config.reset(token)
