"""The edge service: prompts in; each answered at the edge or escalated to the cloud, exactly once.

A :class:`~nm_toolkit.bus.runtime.StreamService` (exactly-once: its answers, its cloud requests,
its dead letters and its input offsets commit in one bus transaction). Per step the runtime polls up
to ``llm.max_batch`` prompts; :meth:`EdgeService.handle` resolves each one's location context
locally, completes the valid ones in one batch (grounded ranked choice, :mod:`nm_toolkit.llm.grounding`),
and routes every request (:func:`nm_toolkit.llm.router.route`):

* answered at the edge: an :class:`~nm_toolkit.llm.messages.AnswerRecord` on the answers topic,
  ``served_by: "edge"`` (the grounded facts rendered by :func:`nm_toolkit.llm.city_qa.edge_answer`,
  or the adapter's output for edge tasks such as intent extraction);
* escalated: a :class:`~nm_toolkit.llm.messages.CloudRequest` with the completed prompt on the
  cloud-requests topic, after the privacy guardrail (:func:`nm_toolkit.llm.privacy.check_egress`)
  passed it; the cloud service writes its answer. A request the guardrail refuses is answered at
  the edge instead, with the reason (never quoting the denied values).

A message that cannot be served (undecodable, invalid, empty, too long, unknown cell, past its
timeout, or in a batch whose generation failed) gets an error answer keyed by its request id and
goes whole to ``llm.dead_letter_topic``. Probe echoes from the cloud (the cloud-status topic)
update the link measurements the router uses; the service sends a probe every
``llm.probe_interval_s``, alternating small and large ones for the bandwidth estimate.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

import orjson
from pydantic import TypeAdapter, ValidationError

from intent.demand import demand_batches
from intent.service import broker_time, user_prompt_intent
from nm_toolkit.bus.base import Message
from nm_toolkit.bus.deadletter import one_line
from nm_toolkit.bus.runtime import FATAL_ERRORS, Emitter, Progress, Rejected, StreamService, Topic
from nm_toolkit.config import Settings
from nm_toolkit.errors import UserError
from nm_toolkit.llm.city_qa import LOCAL_KINDS, edge_answer
from nm_toolkit.llm.deployment import LlmPaths, service_classifier
from nm_toolkit.llm.grounding import GroundedGeneration
from nm_toolkit.llm.lora import AdapterRegistry
from nm_toolkit.llm.messages import AnswerRecord, CloudRequest, LoadWindow, ProbeEcho, error_answer
from nm_toolkit.llm.netgpt import COMPLETION_TASK, EdgeCompleter, EdgeRequest, PreparedRequest
from nm_toolkit.llm.placement import AdapterPlacement, live_decisions
from nm_toolkit.llm.privacy import DEFAULT_POLICY, EgressPolicy, check_egress
from nm_toolkit.llm.router import LinkMonitor, RouteDecision, RouterConfig, route
from nm_toolkit.llm.service_class import ServiceClassifier
from nm_toolkit.schemas import Identifier, PlaceAdapter, PromptMessage

if TYPE_CHECKING:
    from nm_toolkit.llm.generation import Generation

log = logging.getLogger(__name__)

_REQUEST_ID: TypeAdapter[str] = TypeAdapter(Identifier)
SMALL_PROBE_BYTES = 0
LARGE_PROBE_BYTES = 64 * 1024


@dataclass(frozen=True)
class ServiceLimits:
    """Bounds on what one request may ask and how long it may wait."""

    max_batch: int = 16
    max_prompt_chars: int = 1000
    request_timeout_s: float = 30.0


@dataclass
class EdgeServiceStats:
    """Every prompt handled is answered once: ``requests == answered_at_edge + escalated + errors``."""

    requests: int = 0
    answered_at_edge: int = 0
    escalated: int = 0
    errors: int = 0
    egress_refused: int = 0
    bytes_edge_to_cloud: int = 0
    generation_batches: int = 0
    generation_failures: int = 0
    probes_sent: int = 0
    probe_echoes: int = 0
    adapters_loaded: int = 0
    adapter_placements: int = 0  # place_adapter decisions for this site taken in
    adapter_loads: int = 0
    adapter_unloads: int = 0
    placement_failures: int = 0
    adapter_misses: int = 0  # requests that named an adapter the site has but had not loaded: loaded on demand
    adapter_miss_load_ms: float = 0.0  # ... the time those loads took, summed (divided by adapter_misses: a miss's latency)
    service_intents: int = 0  # prompts whose service intent (and demand) this service published
    classified_by_model: int = 0  # ... their class from the edge model's own output
    classified_by_keywords: int = 0  # ... from the keyword rules (the model unsure, or not loaded)
    link_rtt_ms: float = 0.0
    link_bandwidth_mbps: float = 0.0
    cloud_queue: int = 0


class _Unanswerable(Rejected):
    """A prompt the service answers with an error record (and dead-letters), knowing its request id."""

    def __init__(self, reason: str, request_id: str | None = None) -> None:
        super().__init__(reason)
        self.request_id = request_id


@dataclass
class _Valid:
    message: Message
    request: PromptMessage
    prepared: PreparedRequest


class EdgeService(StreamService):
    """Completes prompts at the edge in micro-batches and routes each to the edge or the cloud."""

    name = "edge"
    exactly_once = True

    def __init__(
        self,
        completer: EdgeCompleter,
        *,
        prompts_topic: str,
        answers_topic: str,
        cloud_topic: str,
        status_topic: str,
        group_id: str,
        dead_letter_topic: str,
        edge: str = "edge-0",
        limits: ServiceLimits = ServiceLimits(),
        router: RouterConfig = RouterConfig(),
        probe_interval_s: float = 2.0,
        policy: EgressPolicy = DEFAULT_POLICY,
        telemetry_topic: str | None = None,
        load_interval_s: float = 60.0,
        decisions_topic: str | None = None,
        registry: AdapterRegistry | None = None,
        adapter_budget: int = 8,
        classifier: ServiceClassifier | None = None,
        demand_topic: str | None = None,
        intent_results_topic: str | None = None,
    ) -> None:
        """``classifier`` with ``demand_topic`` and ``intent_results_topic``: every prompt's service
        intent (its class from the edge model's own output) and demand are published as the intent
        service would publish them (``intent.user_demand = "edge"``); without them, none are."""
        self.completer = completer
        self.classifier = classifier if demand_topic and intent_results_topic else None
        self.demand_topic = demand_topic
        self.intent_results_topic = intent_results_topic
        self.prompts = Topic(prompts_topic, PromptMessage)
        # Probe echoes and place_adapter decisions concern every replica of the site, so each reads
        # them whole (broadcast), not a share; decisions from the beginning: a restart knows what
        # is placed (until it expires).
        self.status = Topic(status_topic, ProbeEcho, broadcast=True)
        self.decisions = Topic(decisions_topic, table=True, broadcast=True) if decisions_topic and registry is not None else None
        self.inputs = [self.prompts, self.status, *([self.decisions] if self.decisions else [])]
        self.registry = registry
        self.placement = AdapterPlacement(adapter_budget)
        self.answers_topic = answers_topic
        self.cloud_topic = cloud_topic
        self.telemetry_topic = telemetry_topic
        self.outputs = [answers_topic, cloud_topic, *([telemetry_topic] if telemetry_topic else [])]
        if self.classifier is not None:
            self.outputs += [demand_topic, intent_results_topic]
        self.group_id = group_id
        self.dead_letter_topic = dead_letter_topic
        self.edge = edge
        self.limits = limits
        self.router = router
        self.probe_interval_s = probe_interval_s
        self.policy = policy
        self.max_poll_records = limits.max_batch
        self.monitor = LinkMonitor(router)
        self.counters = EdgeServiceStats()
        self.load = LoadWindow(edge, load_interval_s if telemetry_topic else 0.0)
        self._started_ms = time.time() * 1000
        self._last_probe = 0.0
        self._last_prompt = 0.0
        self._large_next = False

    # -- the loop's hooks --------------------------------------------------------------------
    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        """Answer or escalate every prompt in ``messages`` (valid ones completed in one batch) and
        take in probe echoes. Never raises for a message (a retry one by one would answer the
        others twice); only faults of the bus or the machine (:data:`FATAL_ERRORS`) propagate."""
        valid: list[_Valid] = []
        decisions: list[Message] = []
        for message in messages:
            if message.topic == self.status.name:
                self._echo(message, out)
                continue
            if self.decisions is not None and message.topic == self.decisions.name:
                decisions.append(message)
                continue
            try:
                request = self._decode(message)
                self._load_on_miss(request, {v.prepared.adapter for v in valid})
                valid.append(_Valid(message, request, self._prepare(message, request)))
            except _Unanswerable as exc:
                self._reject(message, exc.request_id, exc.errors[0].reason, out)
            except FATAL_ERRORS:
                raise
            except Exception as exc:  # noqa: BLE001 - a poison message must not stop the service
                log.exception("%s could not prepare %s/%d/%d", self.name, *message.topic_partition, message.offset)
                self._reject(message, request_id_of(message.value), f"{self.name} failed on it: {type(exc).__name__}: {exc}", out)
        if any(m.topic == self.prompts.name for m in messages):
            self._last_prompt = time.monotonic()
        if valid:
            self._serve(valid, out)
        if decisions:  # after serving: an adapter a request of this batch chose is never unloaded under it
            self._place(decisions, out)

    def tick(self, out: Emitter, progress: Progress, final: bool = False) -> bool:
        """Report the load every ``load_interval_s``; probe the link every ``probe_interval_s`` while
        prompts flow (and twice at start, for a first small/large pair): an idle edge neither loads
        the link nor keeps itself busy."""
        if self.telemetry_topic and (self.load.due() or (final and self.load.counts)):
            self._report_load(out)
        now = time.monotonic()
        if final or self.probe_interval_s <= 0 or now - self._last_probe < self.probe_interval_s:
            return False
        if self.counters.probes_sent >= 2 and now - self._last_prompt > 2 * self.probe_interval_s:
            return False
        self._last_probe = now
        size = LARGE_PROBE_BYTES if self._large_next else SMALL_PROBE_BYTES
        self._large_next = not self._large_next
        sent_ms = time.time() * 1000
        probe = CloudRequest(
            kind="probe", request_id=f"probe-{uuid.uuid4().hex[:12]}", edge=self.edge, edge_sent_ms=sent_ms,
            arrived_ms=sent_ms, padding="x" * size,
        )  # fmt: skip
        out.send(self.cloud_topic, probe, self.edge)
        self.counters.probes_sent += 1
        return False

    def stats(self) -> dict[str, float]:
        return asdict(self.counters)

    def _report_load(self, out: Emitter) -> None:
        """The window's load as telemetry counts: ``EDGE|prompts`` (what edge autoscaling reads),
        ``escalated``, ``answered_at_edge``, ``edge_to_cloud_bytes``, ``queue_delay_ms`` (summed
        over the prompts: divided by ``prompts``, the mean) and ``adapter.<name>.requests``."""
        out.send(self.telemetry_topic, self.load.report(), self.edge)  # type: ignore[arg-type]

    def _place(self, messages: Sequence[Message], out: Emitter) -> None:
        """Carry out this site's place_adapter decisions: load what they place, unload what the
        budget has no room for (least recently used first), between batches."""
        assert self.registry is not None
        now = time.monotonic()
        for decision, left in live_decisions(messages, out, PlaceAdapter, self.edge):
            self.placement.place(decision.adapter, now + left)
            self.counters.adapter_placements += 1
        lm = self.completer.lm
        plan = self.placement.plan(set(lm.cards), {card.name for card in self.registry.cards()}, now)
        for name in plan.unload:
            lm.remove_adapter(name)
            self.counters.adapter_unloads += 1
        for name in plan.load:
            try:
                lm.add_adapter(self.registry, name)
                self.counters.adapter_loads += 1
            except FATAL_ERRORS:
                raise
            except Exception:  # noqa: BLE001 - a broken adapter file must not stop serving
                log.exception("adapter %s stays unloaded: it could not be loaded", name)
                self.counters.placement_failures += 1
                self.placement.placed_until.pop(name, None)
        self.counters.adapters_loaded = len(lm.cards)

    def _load_on_miss(self, request: PromptMessage, keep: set[str]) -> None:
        """Load the adapter a request names when the site has it but has not loaded it (a miss,
        its latency counted), making room within the budget without evicting one that ``keep``
        (this batch's requests so far) uses. Nothing to do without a registry, for a loaded or
        unknown adapter (the request is then answered with the reason)."""
        name, lm = request.adapter, self.completer.lm
        if name is None or name in lm.cards or self.registry is None or name not in {c.name for c in self.registry.cards()}:
            return
        plan = self.placement.room_for(name, set(lm.cards), keep, time.monotonic())
        if not plan.load:
            return  # the batch in hand uses every loaded adapter: the request is told it is not loaded
        started = time.perf_counter()
        for evicted in plan.unload:
            lm.remove_adapter(evicted)
            self.counters.adapter_unloads += 1
        try:
            lm.add_adapter(self.registry, name)
        except FATAL_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - a broken adapter file must not stop serving
            log.exception("adapter %s asked for by a request could not be loaded", name)
            self.counters.placement_failures += 1
            return
        self.counters.adapter_misses += 1
        self.counters.adapter_miss_load_ms += 1000 * (time.perf_counter() - started)
        self.counters.adapters_loaded = len(lm.cards)

    # -- serving -----------------------------------------------------------------------------
    def _serve(self, valid: list[_Valid], out: Emitter) -> None:
        self.counters.generation_batches += 1
        try:
            generations = self.completer.complete([v.prepared for v in valid])
            if len(generations) != len(valid):
                raise RuntimeError(f"{len(generations)} completions for {len(valid)} prompts")
        except FATAL_ERRORS:
            raise
        except Exception as exc:  # noqa: BLE001 - keep serving: the batch's requests get the reason instead
            log.exception("generation failed for a batch of %d", len(valid))
            self.counters.generation_failures += 1
            for v in valid:
                self._reject(v.message, v.request.request_id, f"generation failed: {type(exc).__name__}: {exc}", out)
            return
        self._publish_intents([v for v in valid if v.prepared.task == COMPLETION_TASK], out)
        link = self.monitor.estimate()
        for v, generation in zip(valid, generations, strict=True):
            self.counters.requests += 1
            self.load.add("prompts")
            self.load.add(f"adapter.{generation.adapter}.requests")
            self.placement.used(generation.adapter, time.monotonic())
            self.load.add("queue_delay_ms", age_ms(v.message))
            if v.prepared.task != COMPLETION_TASK:  # an edge task (intent extraction, ...): its output is the answer
                self._answer(v, out, generation.text, RouteDecision("edge", f"edge task {v.prepared.task}", 0.0), generation)
                continue
            request = self._cloud_request(v, generation.text)
            encoded = request.model_dump_json(exclude_none=True).encode()
            size = len(encoded)
            if isinstance(generation, GroundedGeneration):
                chosen = generation.choice.chosen
                confidence, local = generation.choice.confidence, chosen.kind in LOCAL_KINDS
            else:  # free generation: nothing the edge could vouch for
                confidence, local = 0.0, False
            deadline_s = None if request.deadline_ms is None else (request.deadline_ms - time.time() * 1000) / 1000
            decision = route(confidence, local, size, link, self.router, deadline_s)
            if decision.path == "cloud":
                violations = check_egress(request.model_dump(exclude_none=True), v.prepared.context, self.policy)
                if not violations:
                    out.send(self.cloud_topic, encoded, request.request_id)
                    self.counters.escalated += 1
                    self.counters.bytes_edge_to_cloud += size
                    self.load.add("escalated")
                    self.load.add("edge_to_cloud_bytes", size)
                    continue
                self.counters.egress_refused += 1
                decision = RouteDecision("edge", f"privacy guardrail kept it at the edge: {'; '.join(violations)}", decision.expected_cloud_s)
            text = edge_answer(generation.choice.chosen, v.request.tenant) if isinstance(generation, GroundedGeneration) else generation.text
            self._answer(v, out, text, decision, generation, confidence)

    def _publish_intents(self, valid: list[_Valid], out: Emitter) -> None:
        """Each user prompt's service intent on the intent-results topic and its demand on the demand
        topic, the class chosen by the edge model (keyword rules when it is unsure); when the model
        fails on the batch, the keyword rules classify it (the prompts are answered all the same)."""
        if self.classifier is None or not valid:
            return
        texts = [v.request.text for v in valid]
        try:
            choices = self.classifier.classify(texts)
        except FATAL_ERRORS:
            raise
        except Exception:  # noqa: BLE001 - demand must not stop serving
            log.exception("service classes by keyword rules: the edge model failed on a batch of %d", len(valid))
            choices = ServiceClassifier(None).classify(texts)
        demand = []
        for v, choice in zip(valid, choices, strict=True):
            at = v.request.ts or broker_time(v.message)
            record, records = user_prompt_intent(
                v.request.request_id, v.request.text, v.prepared.context.cell.cell, choice.service_class, choice.source, at, v.message
            )  # fmt: skip
            out.send(self.intent_results_topic, record, record.request_id)  # type: ignore[arg-type]
            demand += records
            self.counters.service_intents += bool(records)
            self.counters.classified_by_model += choice.source == "edge_model"
            self.counters.classified_by_keywords += choice.source == "keywords"
        for location, batch in demand_batches(demand).items():
            out.send(self.demand_topic, batch, location)  # type: ignore[arg-type]

    def _cloud_request(self, v: _Valid, completed: str) -> CloudRequest:
        arrived = v.message.timestamp_ms
        deadline = None if v.request.deadline_s is None else arrived + 1000 * v.request.deadline_s
        return CloudRequest(
            request_id=v.request.request_id, text=completed, tenant=v.request.tenant, deadline_ms=deadline,
            edge=self.edge, edge_sent_ms=time.time() * 1000, arrived_ms=arrived,
        )  # fmt: skip

    def _answer(
        self, v: _Valid, out: Emitter, text: str, decision: RouteDecision, generation: Generation, confidence: float | None = None
    ) -> None:
        kind = generation.choice.chosen.kind if isinstance(generation, GroundedGeneration) else None
        latency = age_ms(v.message)
        deadline_ms = None if v.request.deadline_s is None else 1000 * v.request.deadline_s
        record = AnswerRecord(
            request_id=v.request.request_id, status="ok", served_by="edge", answer=text, route_reason=decision.reason,
            confidence=confidence, kind=kind, adapter=generation.adapter, tenant=v.request.tenant,
            new_tokens=generation.new_tokens, latency_ms=latency, late=deadline_ms is not None and latency > deadline_ms,
        )  # fmt: skip
        out.send(self.answers_topic, record.model_dump_json(exclude_none=True).encode(), v.request.request_id)
        self.counters.answered_at_edge += 1
        self.load.add("answered_at_edge")

    def _echo(self, message: Message, out: Emitter) -> None:
        """Take in a probe echo of this site (any replica's: they share the site's link, and every
        replica reads every echo; other sites' echoes measure other links)."""
        try:
            echo = self.status.decode(message)
        except Rejected as exc:
            out.dead_letter(message, exc.errors)
            return
        if echo.edge != self.edge or echo.edge_sent_ms < self._started_ms:
            return  # another site's link, or a probe sent before this replica started: the past
        self.monitor.observe((time.time() * 1000 - echo.edge_sent_ms) / 1000, echo.probe_bytes, echo.cloud_queue,
                             None if echo.cloud_service_ms is None else echo.cloud_service_ms / 1000)  # fmt: skip
        link = self.monitor.estimate()
        self.counters.probe_echoes += 1
        self.counters.link_rtt_ms = 1000 * link.rtt_s
        self.counters.link_bandwidth_mbps = link.bandwidth_bps / 1e6
        self.counters.cloud_queue = link.cloud_queue

    # -- validation --------------------------------------------------------------------------
    def _decode(self, message: Message) -> PromptMessage:
        """The prompt message, or :class:`_Unanswerable` with the runtime's reason and whatever
        request id the message names."""
        try:
            return self.prompts.decode(message)
        except Rejected as exc:
            raise _Unanswerable(exc.errors[0].reason, request_id_of(message.value)) from exc
        except OverflowError as exc:  # a time with no UTC equivalent (year 9999 west of Greenwich)
            reason = f"not a {PromptMessage.__name__}: {one_line(str(exc), 200)}"
            raise _Unanswerable(reason, request_id_of(message.value)) from exc

    def _prepare(self, message: Message, request: PromptMessage) -> PreparedRequest:
        rid = request.request_id
        if not request.text.strip():
            raise _Unanswerable("empty prompt: send the user's words in 'text'", rid)
        if len(request.text) > self.limits.max_prompt_chars:
            raise _Unanswerable(f"prompt too long: {len(request.text)} characters > {self.limits.max_prompt_chars}", rid)
        if request.cell is None:
            raise _Unanswerable("location has no cell: send 'location' as a cell id or {'cell': ...}", rid)
        if (age := age_ms(message)) > 1000 * self.limits.request_timeout_s:
            raise _Unanswerable(f"timed out: waited {age / 1000:.1f} s > {self.limits.request_timeout_s} s in the queue", rid)
        try:
            prepared = self.completer.prepare(
                EdgeRequest(request.text, request.cell, request.user, request.ts, request.task or COMPLETION_TASK, request.adapter)
            )
        except UserError as exc:
            raise _Unanswerable(str(exc), rid) from exc
        tokens = self.completer.lm.token_counts([prepared.model_input])[0]
        if tokens > self.completer.limits.max_input_tokens:
            raise _Unanswerable(f"prompt too long: {tokens} tokens with context > {self.completer.limits.max_input_tokens}", rid)
        return prepared

    def _reject(self, message: Message, request_id: str | None, reason: str, out: Emitter) -> None:
        """Dead-letter ``message`` and answer it with the error."""
        out.dead_letter(message, reason)
        self.counters.requests += 1
        self.counters.errors += 1
        key = request_id if request_id is not None else message.key
        out.send(self.answers_topic, error_answer(request_id, reason, "edge", age_ms(message)), key)


def edge_service(settings: Settings, completer: EdgeCompleter, registry: AdapterRegistry | None = None) -> EdgeService:
    """The edge service the settings describe, completing with ``completer``
    (:func:`nm_toolkit.llm.deployment.edge_completer` builds the configured one) and placing the
    adapters of ``registry`` (default: ``llm.adapters_dir``) as the decisions say."""
    if registry is None:
        registry = AdapterRegistry(LlmPaths.from_settings(settings).adapters_dir)
    cfg = settings.llm
    return EdgeService(
        completer,
        prompts_topic=settings.topics.prompts,
        answers_topic=settings.topics.answers,
        cloud_topic=settings.topics.cloud_requests,
        status_topic=settings.topics.cloud_status,
        group_id=cfg.group_id,
        dead_letter_topic=cfg.dead_letter_topic,
        edge=cfg.edge_site,
        limits=ServiceLimits(cfg.max_batch, cfg.max_prompt_chars, cfg.request_timeout_s),
        router=RouterConfig(confidence_threshold=cfg.confidence_threshold),
        probe_interval_s=cfg.probe_interval_s,
        telemetry_topic=settings.topics.telemetry if cfg.load_interval_s > 0 else None,
        load_interval_s=cfg.load_interval_s,
        decisions_topic=settings.topics.decisions,
        registry=registry,
        adapter_budget=cfg.adapter_budget,
        classifier=service_classifier(settings, completer.lm),
        demand_topic=settings.intent.demand_topic if settings.intent.user_demand == "edge" else None,
        intent_results_topic=settings.topics.intent_results,
    )


def request_id_of(raw: bytes) -> str | None:
    """The request id a message that failed validation names, if it names a valid one: its error
    answer is then keyed by it, so the requester learns why."""
    try:
        data = orjson.loads(raw)
    except (orjson.JSONDecodeError, RecursionError):
        return None
    if not isinstance(data, dict):
        return None
    try:
        return _REQUEST_ID.validate_python(data.get("request_id"))
    except ValidationError:
        return None


def age_ms(message: Message) -> float:
    """How long ago ``message`` reached the bus."""
    return max(0.0, time.time() * 1000 - message.timestamp_ms)
