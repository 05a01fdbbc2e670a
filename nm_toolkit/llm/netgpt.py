"""NetGPT's edge-cloud split: the edge completes prompts with local context, the cloud answers them.

Only the completed prompt crosses the network; the cell, the places around it and the user's
profile stay at the edge. :func:`evaluate_completion` scores an edge model on held-out pairs. The
cloud answers with one LoRA adapter per tenant, chosen per request (:class:`CloudResponder`); the
task both sides are trained and scored on is :mod:`nm_toolkit.llm.city_qa`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from nm_toolkit.llm.city_qa import CITY_QA_TASK, DEFAULT_TENANT, cloud_prompt
from nm_toolkit.llm.completion_data import TIME_OF_DAY_HOURS, CompletionExample, cloud_only_payload, edge_input
from nm_toolkit.llm.context import ContextStore, LocationContext
from nm_toolkit.llm.generation import AdapterLM, Generation, GenerationLimits
from nm_toolkit.llm.grounding import GroundedChoice, GroundedChooser, GroundedGeneration
from nm_toolkit.llm.metrics import exact_match, rouge_l

COMPLETION_TASK = "prompt_completion"


@dataclass(frozen=True)
class EdgeRequest:
    """A user's concise prompt with who and where it comes from (resolved at the edge only)."""

    text: str
    cell: str
    user: str | None = None
    when: datetime | None = None
    task: str = COMPLETION_TASK
    adapter: str | None = None


@dataclass(frozen=True)
class PreparedRequest:
    model_input: str
    adapter: str
    context: LocationContext
    task: str = COMPLETION_TASK
    text: str = ""  # the user's words


class EdgeCompleter:
    """The edge service: resolves context locally and completes prompts with the chosen adapter.

    With ``grounded`` (the default) a prompt-completion request served by a prompt-completion
    adapter is completed by ranked choice among grounded candidates (:mod:`nm_toolkit.llm.grounding`):
    the place, its distance and rating come from the context store, the model picks the category.
    Other requests (other tasks, or the un-tuned base model, which never learnt the completed
    prompt's form) are generated freely, as every request is with ``grounded=False``.
    """

    def __init__(
        self, lm: AdapterLM, store: ContextStore, limits: GenerationLimits = GenerationLimits(), *,
        grounded: bool = True, chooser: GroundedChooser | None = None,
    ) -> None:  # fmt: skip
        self.lm = lm
        self.store = store
        self.limits = limits
        self.grounded = grounded
        self.chooser = chooser or GroundedChooser(lm)

    def prepare(self, request: EdgeRequest) -> PreparedRequest:
        """Model input and adapter of one request; raises :class:`UserError` for an unknown cell or adapter."""
        context = self.store.context(request.cell, request.user, request.when or datetime.now(UTC))
        adapter = self.lm.select(request.task, context.cell.district, request.adapter)
        return PreparedRequest(edge_input(request.text, context), adapter, context, request.task, request.text)

    def grounds(self, prepared: PreparedRequest) -> bool:
        """Whether ``prepared`` is completed by grounded ranked choice rather than generated."""
        card = self.lm.cards.get(prepared.adapter)
        return self.grounded and prepared.task == COMPLETION_TASK and card is not None and card.task == COMPLETION_TASK

    def complete(self, prepared: Sequence[PreparedRequest], seed: int | None = None) -> list[Generation]:
        """One completion per request, in order: grounded rows as :class:`GroundedGeneration`
        (``seed`` does not apply to them), the others generated in one batch."""
        grounded = [i for i, p in enumerate(prepared) if self.grounds(p)]
        free = sorted(set(range(len(prepared))) - set(grounded))
        out: list[Generation | None] = [None] * len(prepared)
        if free:
            for i, generation in zip(free, self.generate([prepared[i] for i in free], seed), strict=True):
                out[i] = generation
        if grounded:
            rows = [prepared[i] for i in grounded]
            choices = self.choose(rows)
            counts = self.lm.token_counts([c.chosen.text for c in choices])
            for i, p, choice, tokens in zip(grounded, rows, choices, counts, strict=True):
                out[i] = GroundedGeneration(choice.chosen.text, tokens, p.adapter, True, choice)
        return [g for g in out if g is not None]

    def generate(self, prepared: Sequence[PreparedRequest], seed: int | None = None) -> list[Generation]:
        """Free generation (the ungrounded path), whatever ``grounded`` says."""
        return self.lm.generate([p.model_input for p in prepared], [p.adapter for p in prepared], self.limits, seed)

    def choose(self, prepared: Sequence[PreparedRequest]) -> list[GroundedChoice]:
        """The grounded ranked choice of every request, whatever ``grounded`` says."""
        return self.chooser.choose(
            [p.model_input for p in prepared], [p.context for p in prepared], [p.adapter for p in prepared], [p.text for p in prepared]
        )


class CloudResponder:
    """The cloud service: answers completed prompts with the adapter of each request's tenant.

    Adapters are :data:`~nm_toolkit.llm.city_qa.CITY_QA_TASK` adapters named after their tenant
    (:func:`~nm_toolkit.llm.city_qa.train_cloud_adapters`); a request without a tenant gets
    :data:`~nm_toolkit.llm.city_qa.DEFAULT_TENANT`'s adapter, else the task's first, else the base
    model when none is loaded (any local checkpoint works).
    In NetGPT it never sees raw location context; :meth:`respond` takes any question, the
    cloud-only forms included, for comparison.
    """

    def __init__(self, lm: AdapterLM, limits: GenerationLimits = GenerationLimits()) -> None:
        self.lm = lm
        self.limits = limits

    def adapters(self, tenants: Sequence[str | None]) -> list[str]:
        """The adapter of each tenant; raises :class:`UserError` for a tenant without one."""
        default = DEFAULT_TENANT if DEFAULT_TENANT in self.lm.cards else None
        return [self.lm.select(CITY_QA_TASK, None, default if tenant is None else tenant) for tenant in tenants]

    def answer(self, completed: Sequence[str], tenants: Sequence[str | None] | None = None) -> list[Generation]:
        """One answer per completed prompt, in one batch; ``tenants[i]`` picks row i's adapter."""
        return self.respond(completed, tenants)

    def respond(self, questions: Sequence[str], tenants: Sequence[str | None] | None = None) -> list[Generation]:
        """:meth:`answer` for any question text (wrapped by :func:`~nm_toolkit.llm.city_qa.cloud_prompt`)."""
        names = self.adapters(tenants if tenants is not None else [None] * len(questions))
        return self.lm.generate([cloud_prompt(q, self.lm.tokenizer) for q in questions], names, self.limits)


@dataclass(frozen=True)
class CompletionReport:
    """Held-out completion quality and the edge-to-cloud traffic it implies."""

    examples: int
    adapter: str
    rouge_l: float
    exact_match: float
    edge_ms_per_request: float
    bytes_edge_to_cloud: float
    bytes_cloud_only: float


def evaluate_completion(
    completer: EdgeCompleter, examples: Sequence[CompletionExample], adapter: str | None, batch_size: int = 16
) -> tuple[CompletionReport, list[Generation]]:
    """Complete every held-out example with ``adapter`` (None: the task's adapter) and score it."""
    outputs: list[Generation] = []
    started = time.perf_counter()
    for start in range(0, len(examples), batch_size):
        chunk = examples[start : start + batch_size]
        prepared = [
            completer.prepare(EdgeRequest(e.text, e.cell, e.user, _at(e.time_of_day), adapter=adapter)) for e in chunk
        ]
        outputs += completer.complete(prepared)
    elapsed = time.perf_counter() - started
    contexts = [completer.store.context(e.cell, e.user, _at(e.time_of_day)) for e in examples]
    n = max(1, len(examples))
    report = CompletionReport(
        examples=len(examples),
        adapter=outputs[0].adapter if outputs else "",
        rouge_l=sum(rouge_l(o.text, e.target) for o, e in zip(outputs, examples, strict=True)) / n,
        exact_match=sum(exact_match(o.text, e.target) for o, e in zip(outputs, examples, strict=True)) / n,
        edge_ms_per_request=1000 * elapsed / n,
        bytes_edge_to_cloud=sum(len(o.text.encode()) for o in outputs) / n,
        bytes_cloud_only=sum(len(cloud_only_payload(e.text, c)) for e, c in zip(examples, contexts, strict=True)) / n,
    )
    return report, outputs


def _at(time_of_day: str) -> datetime:
    """A moment that falls in ``time_of_day`` (the data set stores the period, not the instant)."""
    return datetime(2024, 1, 1, TIME_OF_DAY_HOURS[time_of_day], tzinfo=UTC)
