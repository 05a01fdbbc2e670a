"""The stream-service runtime: every service is a handler; this owns the loop around it.

In the shape of a faust agent or a bytewax dataflow, on our own :class:`~nm_toolkit.bus.Bus`. A
service (:class:`StreamService`) declares the topics it reads, with their schemas, and says what a
batch of messages means; :class:`StreamRunner` owns everything else, once for all services:

* poll -> handle -> flush -> checkpoint -> commit, in that order: offsets are committed only after
  every output of the messages before them is durably written and the service's state saved;
* dead letters: a message the service rejects (:class:`Rejected`), or one whose handling raises,
  goes to the service's dead-letter topic with the original bytes and the reason, and the service
  carries on: a poison message never stops it or makes it crash-loop;
* faults it cannot survive stop it: a write the bus refused (:class:`~nm_toolkit.bus.base.DeliveryFailed`),
  a full disk, a broken store raise out of :meth:`StreamRunner.run`, with nothing committed past them;
* rebalances: partitions revoked from this member are dropped without blocking (kafka-python 3
  runs rebalance callbacks on its IO thread, where a blocking commit raises); a stateful service
  restores a partition's checkpoint when it is assigned and reading resumes at the checkpoint's
  offset, so state moves with its partition;
* table topics (the latest value per key is the state, e.g. intents in force) are read from the
  beginning on every assignment;
* exactly-once services (``exactly_once``): outputs, dead letters and the input offsets commit in
  one bus transaction, so a crash or a rebalance neither loses nor repeats an output; a commit
  that fails is aborted and reading resumes at the committed offsets (such services keep no
  checkpointed state: their state would run ahead of an aborted transaction);
* idle exit that does not count waiting to join a group, signals (a ``stop`` event), and per-service
  statistics that :mod:`nm_toolkit.bus.metrics` exports to Prometheus.
"""

from __future__ import annotations

import logging
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Generic, TypeVar

import orjson
from pydantic import BaseModel, ValidationError

from nm_toolkit.bus.base import Bus, DeliveryFailed, Message, TopicPartition
from nm_toolkit.bus.deadletter import RecordError, dead_letter, one_line
from nm_toolkit.errors import validation_reason

log = logging.getLogger(__name__)

ModelT = TypeVar("ModelT", bound=BaseModel)

FATAL_ERRORS: tuple[type[BaseException], ...] = (DeliveryFailed, OSError, MemoryError, sqlite3.Error)
"""Errors that say the service, not the message, is broken: they stop it instead of dead-lettering."""

LOG_END_TIMEOUT_S = 5.0
"""How long :attr:`Progress.at_log_end` waits for the bus to say where a log ends (no answer: not at its end)."""


class Rejected(Exception):
    """A message the service cannot use: it goes to the dead-letter topic with these reasons."""

    def __init__(self, reason: str | Sequence[RecordError]) -> None:
        self.errors = [RecordError(reason)] if isinstance(reason, str) else list(reason)
        super().__init__(self.errors[0].reason if self.errors else "rejected")


@dataclass(frozen=True)
class Topic(Generic[ModelT]):
    """A topic and the schema of its values.

    ``table``: the topic is a changelog whose latest value per key is the state (the intents in
    force, the latest forecast per series); a service reads it whole on every assignment instead
    of from committed offsets.

    ``broadcast``: every member of the service's group reads all of it, from the beginning and
    outside the work-sharing group (:meth:`~nm_toolkit.bus.base.Bus.reader`), and commits none of
    it: what concerns every replica (its site's decisions, the probe echoes of its link).
    """

    name: str
    model: type[ModelT] | None = None
    table: bool = False
    broadcast: bool = False

    def decode(self, message: Message) -> ModelT:
        """The message's value as this topic's model, or :class:`Rejected` with the reason."""
        if self.model is None:
            raise TypeError(f"topic {self.name} declares no schema")
        if not message.value.strip():
            raise Rejected("empty message")
        try:
            return self.model.model_validate_json(message.value)
        except ValidationError as exc:
            try:
                message.value.decode("utf-8")
            except UnicodeDecodeError as bad:
                raise Rejected(f"not UTF-8 ({bad.reason} at byte {bad.start})") from exc
            first = exc.errors()[0]
            if first["type"] == "json_invalid":
                raise Rejected(f"invalid JSON: {(first.get('ctx') or {}).get('error', first['msg'])}") from exc
            if first["type"] == "model_type" and not first["loc"]:
                raise Rejected(f"expected a JSON object, got {type(first['input']).__name__}") from exc
            raise Rejected(f"not a {self.model.__name__}: {validation_reason(exc)}") from exc
        except (ValueError, RecursionError) as exc:  # nesting or numbers beyond the JSON parser's limits
            raise Rejected(f"not a {self.model.__name__}: {one_line(str(exc), 200)}") from exc


def object_json(raw: bytes, plain_text: bool = False) -> dict[str, object] | None:
    """The JSON object in ``raw``, parsed once, or :class:`Rejected` saying why it is not one.
    With ``plain_text``, UTF-8 that is not JSON and does not look like it is plain text: None."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Rejected(f"not UTF-8 ({exc.reason} at byte {exc.start})") from exc
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        if plain_text and not text.lstrip().startswith(("{", "[")):
            return None
        raise Rejected(f"invalid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise Rejected(f"expected a JSON object, got a JSON {type(data).__name__}")
    return data


@dataclass(frozen=True)
class Progress:
    """Where a runner stands, for a service's periodic work.

    ``healthy``: the bus is reachable, so time without messages means no data (an outage is not
    idleness). ``caught_up``: the last poll brought nothing and every owned partition is read up
    to its end as last seen (a round over a table decides on all of it, not on what arrived first).
    """

    healthy: bool = True
    caught_up: bool = True
    unfetched: frozenset[TopicPartition] = frozenset()
    """Owned partitions not fetched up to their end since they were assigned (their end or
    position unknown, or messages left): silence on them is not idleness."""
    at_log_end: Callable[[Collection[TopicPartition]], frozenset[TopicPartition]] = frozenset
    """Of the given partitions, those whose fetch position has reached the end of the log as the
    bus reports it now (a request: for a decision the clock alone must not make, such as closing
    windows for idleness; the end the last fetch saw may predate an outage)."""


class Emitter:
    """What a service sends through: outputs and dead letters on the runner's producer, counted."""

    def __init__(self, runner: StreamRunner) -> None:
        self._runner = runner
        self.sent: Counter[str] = Counter()
        self.dead_lettered = 0

    def send(
        self,
        topic: str | Topic[ModelT],
        value: bytes | BaseModel | None,
        key: bytes | str | None = None,
        headers: Sequence[tuple[str, bytes]] = (),
    ) -> None:
        """Send ``value`` (None: a tombstone, which deletes ``key`` from a table topic)."""
        name = topic if isinstance(topic, str) else topic.name
        data = value.model_dump_json().encode() if isinstance(value, BaseModel) else value
        self._runner.producer.send(name, data, key.encode() if isinstance(key, str) else key, headers)
        self.sent[name] += 1

    def flush(self, timeout_s: float | None = None) -> None:
        """Wait until everything sent is written (the runner also flushes before each commit)."""
        self._runner.producer.flush(timeout_s)

    def dead_letter(self, message: Message, errors: str | Sequence[RecordError]) -> None:
        """Send ``message`` whole to the service's dead-letter topic with the reason(s)."""
        service = self._runner.service
        listed = [RecordError(errors)] if isinstance(errors, str) else list(errors)
        record = dead_letter(message, listed, service.name, self._runner.bus.max_message_bytes)
        self._runner.producer.send(service.dead_letter_topic, record.value, record.key, record.headers)
        self.sent[service.dead_letter_topic] += 1
        self.dead_lettered += 1


class StreamService(ABC):
    """A handler on the runtime: what its messages mean, nothing about how they are read.

    Subclasses set ``name``, ``group_id``, ``dead_letter_topic``, ``inputs`` and ``outputs`` and
    implement :meth:`handle`. A stateful service also overrides :meth:`assigned`, :meth:`revoked`
    and :meth:`checkpoint`.
    """

    name: str = "service"
    group_id: str
    dead_letter_topic: str
    inputs: Sequence[Topic[BaseModel]]
    outputs: Sequence[str] = ()
    max_poll_records: int = 1000
    commit_interval_s: float = 0.0
    """Commit at most this often (a checkpoint of window state is not free); 0: after every batch."""
    exactly_once: bool = False
    """Commit outputs and input offsets in one bus transaction (see the module docstring)."""

    def started(self, out: Emitter) -> None:
        """The runner is ready: ``out`` sends through it (for outputs not tied to a message)."""

    @abstractmethod
    def handle(self, messages: Sequence[Message], out: Emitter) -> None:
        """Apply ``messages`` (in partition order): send outputs through ``out``, dead-letter what
        cannot be used (or raise :class:`Rejected` for a single message). Outputs are flushed and
        offsets committed by the runner."""

    def tick(self, out: Emitter, progress: Progress, final: bool = False) -> bool:
        """Periodic work after each poll (close idle windows, a forecast round). ``final``: the
        service is about to exit. Return True to have the runner checkpoint and commit now."""
        return False

    def assigned(self, partitions: set[TopicPartition]) -> Mapping[TopicPartition, int | None]:
        """Restore state for newly assigned partitions; return where to resume reading each one
        (an offset; None for the beginning). Omitted partitions resume at the group's committed
        offset. Runs on the polling thread, before any message of these partitions is handled."""
        return {}

    def revoked(self, partitions: set[TopicPartition]) -> None:
        """Drop state of partitions another member now owns (their last checkpoint stays valid)."""

    @property
    def busy(self) -> bool:
        """Whether work is in flight that :meth:`tick` advances (continuous batching): the runner
        then polls without waiting."""
        return False

    def committable(self, pending: Mapping[TopicPartition, int]) -> Mapping[TopicPartition, int]:
        """The part of ``pending`` (next offsets to read, per partition) that may be committed now.
        A service that holds messages across steps returns, per partition, at most the offset of its
        first message whose outputs are not all sent yet (and sends outputs in offset order), so
        that a restart re-reads exactly the unfinished ones."""
        return pending

    def checkpoint(self, offsets: Mapping[TopicPartition, int]) -> None:
        """Persist state consistent with ``offsets`` (next offsets to read), after outputs were
        flushed and before those offsets are committed."""

    def stats(self) -> dict[str, float]:
        """The service's own counters, exported with the runner's."""
        return {}

    def close(self) -> None:
        """Release what the service holds (stores, adapters); the runner closes the bus clients."""


@dataclass
class RuntimeStats:
    """Counters every service gets from the runtime."""

    messages: int = 0
    batches: int = 0
    commits: int = 0
    commits_lost_to_rebalance: int = 0
    transactions_aborted: int = 0
    commit_retries: int = 0
    handler_errors: int = 0
    rebalances: int = 0
    batch_seconds: list[float] = field(default_factory=list)
    """Durations of recent batches (the metrics endpoint turns them into a histogram)."""


class StreamRunner:
    """Runs one :class:`StreamService` as a consumer-group member on ``bus``."""

    def __init__(self, bus: Bus, service: StreamService) -> None:
        self.bus = bus
        self.service = service
        self.stats = RuntimeStats()
        self._lock = threading.RLock()
        self._next: dict[TopicPartition, int] = {}
        self._pending: dict[TopicPartition, int] = {}
        self._owned: set[TopicPartition] = set()
        self._start: dict[TopicPartition, int] = {}
        """Where reading began on each owned partition: what "read up to its end" is counted from
        until a message of it is handled (a fetch position can run ahead into buffered messages)."""
        self._events: list[tuple[str, set[TopicPartition]]] = []
        self._events_lock = threading.Lock()
        self._last_commit = time.monotonic()
        self._committed: dict[TopicPartition, int] = {}
        """Offsets this member committed last, so that one held back is not committed again."""
        self._tables = {t.name for t in service.inputs if t.table}
        bus.create_topics([*(t.name for t in service.inputs), *service.outputs, service.dead_letter_topic])
        self.producer = bus.producer(service.group_id if service.exactly_once else None)
        self.emitter = Emitter(self)
        shared = [t.name for t in service.inputs if not t.broadcast]
        if not shared:
            raise ValueError(f"{service.name}: a stream service needs an input its group shares, not only broadcast ones")
        broadcast = [t.name for t in service.inputs if t.broadcast]
        self.reader = bus.reader(broadcast, service.max_poll_records) if broadcast else None
        self.consumer = bus.consumer(
            shared,
            service.group_id,
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            max_poll_records=service.max_poll_records,
        )
        self._closed = False
        service.started(self.emitter)

    # -- rebalances ------------------------------------------------------------------------------
    # The bus may call these on its own IO thread (kafka-python 3), where blocking on the bus
    # raises and waiting for the service's lock could deadlock with a commit in progress. So they
    # only record the event; the service sees it on the polling thread, in order, before it
    # handles or checkpoints anything.
    def _on_assign(self, partitions: set[TopicPartition]) -> None:
        with self._events_lock:
            self._events.append(("assign", set(partitions)))

    def _on_revoke(self, partitions: set[TopicPartition]) -> None:
        with self._events_lock:
            self._events.append(("revoke", set(partitions)))

    def _apply_rebalance(self, messages: list[Message]) -> list[Message]:
        """Apply recorded assignment changes; return the messages still to handle."""
        with self._events_lock:
            events, self._events = self._events, []
        if not events:
            return messages
        owned = set(self._owned)
        for kind, partitions in events:
            owned = owned | partitions if kind == "assign" else owned - partitions
        gone, new = self._owned - owned, owned - self._owned
        kept = {tp for _, partitions in events for tp in partitions} & self._owned & owned
        self._owned = owned
        self.stats.rebalances += 1
        if gone:
            self.service.revoked(gone)
            for tp in gone:
                self._pending.pop(tp, None)
                self._next.pop(tp, None)
                self._start.pop(tp, None)
                self._committed.pop(tp, None)
        resume: dict[TopicPartition, int | None] = {tp: self._next[tp] for tp in kept if tp in self._next}
        if new:
            resume.update(self.service.assigned(new))
            resume.update({tp: None for tp in new if tp[0] in self._tables})
            # kafka-python 3 keeps the fetch position of a partition that comes back to this member,
            # past what the service dropped when it was revoked (held, never committed): read again
            # from the group's commit, as the next owner would (none: from the beginning)
            resume.update({tp: self.consumer.committed(tp) for tp in new - resume.keys()})
        for tp, offset in resume.items():
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
            self._start[tp] = offset or 0
        return [m for m in messages if m.topic_partition in owned and m.topic_partition not in resume]

    # -- the loop --------------------------------------------------------------------------------
    def step(self, timeout_s: float = 0.5, limit: int | None = None) -> int:
        """Poll once (at most ``limit`` messages), handle, tick, commit when due; return how many
        messages were handled."""
        batch_size = min(self.service.max_poll_records, limit or self.service.max_poll_records)
        with self._lock:
            self._apply_rebalance([])  # seek before fetching where the bus reported an assignment already
        broadcast = self.reader.poll(batch_size, 0.0) if self.reader is not None else []
        polled = self.consumer.poll(batch_size, 0.0 if self.service.busy or broadcast else timeout_s)
        with self._lock:
            messages = self._apply_rebalance(polled)
            if messages or broadcast:
                started = time.perf_counter()
                self._handle(broadcast + messages)  # one batch: the broadcast ones are never committed
                for message in messages:
                    self._pending[message.topic_partition] = message.offset + 1
                    self._next[message.topic_partition] = message.offset + 1
                self.stats.messages += len(messages) + len(broadcast)
                self.stats.batches += 1
                self.stats.batch_seconds.append(time.perf_counter() - started)
                del self.stats.batch_seconds[:-1000]
            due = self.service.tick(self.emitter, self.progress(polled_nothing=not polled))
            work = self._uncommitted() or self.producer.in_transaction
            if due or (work and time.monotonic() - self._last_commit >= self.service.commit_interval_s):
                self.commit()
        return len(messages) + len(broadcast)

    def _handle(self, messages: list[Message]) -> None:
        try:
            self.service.handle(messages, self.emitter)
            return
        except FATAL_ERRORS:
            raise
        except Rejected as exc:
            if len(messages) == 1:
                self.emitter.dead_letter(messages[0], exc.errors)
                return
        except Exception:
            log.exception("%s failed on a batch of %d; retrying one by one", self.service.name, len(messages))
        for message in messages:  # services skip messages they already applied (offset checks)
            try:
                self.service.handle([message], self.emitter)
            except FATAL_ERRORS:
                raise
            except Rejected as exc:
                self.emitter.dead_letter(message, exc.errors)
            except Exception as exc:
                self.stats.handler_errors += 1
                log.exception("%s could not handle %s/%d/%d", self.service.name, *message.topic_partition, message.offset)
                self.emitter.dead_letter(message, f"{self.service.name} failed on it: {type(exc).__name__}: {exc}")

    def commit(self) -> None:
        """Flush outputs, checkpoint the service's state, then commit: in that order, so nothing
        is lost. A commit the group refuses because of a rebalance is not an error: the new owner
        resumes from the checkpoint."""
        with self._lock:
            self.producer.flush()
            self._apply_rebalance([])
            pending = self._committable()
            self.service.checkpoint(pending)
            self._last_commit = time.monotonic()
            if not pending and not self.producer.in_transaction:
                return
            try:
                self.producer.commit_offsets(self.consumer, pending)
                self.stats.commits += 1
                self._committed.update(pending)
                for tp, offset in pending.items():  # what the service still holds is committed later
                    if self._pending.get(tp) == offset:
                        del self._pending[tp]
                return
            except Exception as exc:
                if self.service.exactly_once and not isinstance(exc, FATAL_ERRORS):
                    self._abort(exc)
                    return
                if not _is_rebalance(exc):
                    if not _is_transient(exc):
                        raise
                    # the checkpoint holds these offsets; commit them next time
                    self.stats.commit_retries += 1
                    log.warning("%s: commit failed for now (%s: %s); retrying at the next commit", self.service.name, type(exc).__name__, exc)
                    return
                self.stats.commits_lost_to_rebalance += 1
                log.info("%s: commit refused during a rebalance (%s); the next owner resumes from the checkpoint", self.service.name, exc)
            self._pending.clear()

    def _committable(self) -> dict[TopicPartition, int]:
        """The offsets a commit now would move: handled, owned, released by the service, and not
        committed already."""
        owned = {tp: o for tp, o in self._pending.items() if tp in self._owned}
        released = self.service.committable(owned) if owned else {}
        return {tp: o for tp, o in released.items() if self._committed.get(tp) != o}

    def _uncommitted(self) -> bool:
        return bool(self._committable())

    def _abort(self, exc: Exception) -> None:
        """A transaction that did not commit: discard its outputs and read its input again from
        the committed offsets (a producer that cannot even abort is broken: that stops the service)."""
        log.warning("%s: transaction not committed (%s: %s); aborting and reading again", self.service.name, type(exc).__name__, exc)
        try:
            self.producer.abort()
        except Exception as abort_exc:
            raise DeliveryFailed(f"transaction neither committed nor aborted: {type(abort_exc).__name__}: {abort_exc}") from exc
        self.stats.transactions_aborted += 1
        self.service.revoked(set(self._owned))  # what it held is read again
        for tp in self._owned:
            offset = self.consumer.committed(tp)
            if offset is None:
                self.consumer.seek_to_beginning(tp)
            else:
                self.consumer.seek(tp, offset)
            self._next.pop(tp, None)
            self._start[tp] = offset or 0
        self._pending.clear()

    def _abort_quietly(self) -> None:
        """Abort after a fault, best effort: the fault is what the caller reports, and the broker
        aborts a transaction left open once it times out."""
        try:
            self.producer.abort()
        except Exception as exc:  # noqa: BLE001
            log.warning("%s: could not abort the open transaction (%s: %s)", self.service.name, type(exc).__name__, exc)

    def run(
        self, stop: threading.Event, idle_exit_s: float | None = None, max_messages: int | None = None
    ) -> None:
        """Work until ``stop`` is set, ``max_messages`` were handled, or nothing arrived for
        ``idle_exit_s`` (see :func:`run_together`); then commit and leave the group."""
        run_together([self], stop, idle_exit_s, max_messages)

    @property
    def joined(self) -> bool:
        """Whether this member holds partitions (a member still joining its group does not)."""
        return bool(self._owned)

    def finish(self) -> None:
        """The service's last tick before an idle exit (a last forecast round, say)."""
        with self._lock:
            self.service.tick(self.emitter, self.progress(polled_nothing=True), final=True)

    def lag(self) -> dict[TopicPartition, int]:
        """Messages behind the end of each assigned partition, as last seen (partitions whose end
        or position is not known yet are left out)."""
        with self._lock:
            owned = set(self._owned)
            for tp in owned - set(self._start):  # resumed at the committed offset: learn where that is
                if (position := self.consumer.position(tp)) is not None:
                    self._start[tp] = position
            at = self._start | self._next
        lags = {}
        for tp in owned:
            end = self.consumer.highwater(tp)
            if end is not None and tp in at:
                lags[tp] = max(0, end - at[tp])
        return lags

    def progress(self, polled_nothing: bool) -> Progress:
        """Where this runner stands now (see :class:`Progress`)."""
        lags = self.lag()
        caught_up = polled_nothing and bool(self._owned) and len(lags) == len(self._owned) and not any(lags.values())
        return Progress(healthy=self.consumer.healthy(), caught_up=caught_up, unfetched=self._unfetched(), at_log_end=self._at_log_end)

    def _at_log_end(self, partitions: Collection[TopicPartition]) -> frozenset[TopicPartition]:
        ends = self.consumer.log_end(partitions, LOG_END_TIMEOUT_S) if partitions else {}
        if ends is None:
            return frozenset()
        return frozenset(tp for tp in partitions if (at := self.consumer.position(tp)) is not None and tp in ends and at >= ends[tp])

    def _unfetched(self) -> frozenset[TopicPartition]:
        """Owned partitions whose fetch position has not reached their end as last fetched (the
        position, not the last message handled: it also steps over transaction markers)."""
        with self._lock:
            owned = set(self._owned)
        unfetched = set()
        for tp in owned:
            position, end = self.consumer.position(tp), self.consumer.highwater(tp)
            if position is None or end is None or position < end:
                unfetched.add(tp)
        return frozenset(unfetched)

    def stats_dict(self) -> dict[str, float]:
        """The runtime's counters and the service's, in one flat mapping."""
        runtime = {k: v for k, v in vars(self.stats).items() if not isinstance(v, list)}
        return self.service.stats() | runtime | {"dead_letters": self.emitter.dead_lettered}

    def close(self, commit: bool = True) -> None:
        """Commit what was handled (unless ``commit`` is False: after a fault, nothing handled
        since the last commit may be trusted to be written), release the service, leave the
        group. Idempotent."""
        if self._closed:
            return
        self._closed = True
        try:
            if commit:
                self.commit()
            elif self.service.exactly_once:
                self._abort_quietly()
        finally:
            try:
                self.service.close()
            finally:
                self.consumer.close()
                if self.reader is not None:
                    self.reader.close()
                self.producer.close()


def _is_transient(exc: Exception) -> bool:
    """Whether a commit failed only for now (the broker restarts): kafka-python marks such errors
    ``retriable`` (connection refused and timeouts among them)."""
    return bool(getattr(exc, "retriable", False))


def _is_rebalance(exc: Exception) -> bool:
    """Whether a commit failed because the group moved on (the partitions have another owner)."""
    names = {cls.__name__ for cls in type(exc).__mro__}
    return bool(
        names
        & {"CommitFailedError", "RebalanceInProgressError", "IllegalGenerationError", "UnknownMemberIdError", "FencedInstanceIdError"}
    )


def run_together(
    runners: Sequence[StreamRunner],
    stop: threading.Event,
    idle_exit_s: float | None = None,
    max_messages: int | None = None,
) -> None:
    """Step ``runners`` in turn (services that work as a pair in one process, such as the intent
    service and its demand collector) until ``stop`` is set, the first has handled
    ``max_messages``, or none handled anything for ``idle_exit_s`` while all held partitions and
    reached the bus (joining a group, which can take a session timeout after a crash, and a broker
    outage are not idleness). Then
    each gets a final tick, commits and leaves its group."""
    first = runners[0]
    last_work = time.monotonic()
    idle = False
    failed = False
    try:
        while not stop.is_set() and (max_messages is None or first.stats.messages < max_messages):
            left = None if max_messages is None else max_messages - first.stats.messages
            handled = first.step(limit=left, timeout_s=0.5 / len(runners))
            handled += sum(runner.step(timeout_s=0.5 / len(runners)) for runner in runners[1:])
            waiting = not all(runner.joined and runner.consumer.healthy() for runner in runners)
            if handled or waiting:  # joining a group or a broker outage is not idleness
                last_work = time.monotonic()
            elif idle_exit_s is not None and time.monotonic() - last_work >= idle_exit_s:
                idle = True
                break
        if idle:
            for runner in runners:
                runner.finish()
    except BaseException:
        failed = True
        raise
    finally:
        errors = []
        for runner in runners:
            try:
                runner.close(commit=not failed)
            except Exception as exc:  # noqa: BLE001 - close the others, then raise the first
                errors.append(exc)
        if errors:
            raise errors[0]


def run_until_idle(runners: Sequence[StreamRunner], idle_s: float = 0.05, max_rounds: int = 10_000) -> int:
    """Step ``runners`` in turn until none handles anything and none holds work in progress
    (``busy``: a cloud batch still decoding), in one process on the embedded bus: the demo and
    tests run the real services this way, not a copy of their loop."""
    total = 0
    for _ in range(max_rounds):
        handled = sum(runner.step(timeout_s=idle_s) for runner in runners)
        total += handled
        if not handled and not any(runner.service.busy for runner in runners):
            break
    for runner in runners:
        runner.commit()
    return total
