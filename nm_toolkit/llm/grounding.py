"""Grounded prompt completion: the context store computes the facts, the edge model only chooses.

A small edge model asked to write "The nearest pharmacy is Farmacia Rossi, 360 m away" from its
input gets the form right and the place wrong (it has to find the right line of the place list
from memory). Here the geometry is computed instead: :func:`candidates` takes the place to suggest
(the nearest that suits the user's profile) of every category in the request's cell from the context store and renders one completed prompt per
category and kind of request (:data:`nm_toolkit.llm.completion_data.KINDS`: "Recommend a pharmacy
..." or "Find an open pharmacy ...") with :func:`nm_toolkit.llm.completion_data.render_prompt`; :class:`GroundedChooser` scores
every candidate under the (LoRA-tuned) edge model given the edge input, all candidates of a batch
of requests in one batched pass (each edge input run once, its KV cache shared by its candidates),
and returns the best with its confidence. A grounded completion can therefore only name the
place to suggest of the category it chose; what is left to the model is the choice of category and
kind, and the confidence tells a router when to doubt it (a request for no place at all still gets the most
likely category: that, too, is the router's to catch).

Scores (``score=``):

* ``"category"`` (default): the summed log-probability of the category-bearing span, the words
  from the start of the completion up to the end of the category's first mention ("Recommend a
  pharmacy", "Find an open pharmacy": the kind's words included). The candidates differ only in
  these words up to there, so the softmax over these scores is the model's probability of each
  (kind, category) renormalised over the candidates. Only
  those words are run through the model, so it is also the cheapest.
* ``"mean"``: the mean token log-probability of the whole completion. It also rewards the model
  for predicting the place's name, distance and rating, which it does badly (the rating is not even
  in the edge input): noise for the choice, and the softmax over per-token means is nearly flat, so
  its confidence says little.
* ``"sum"``: the summed log-probability of the whole completion.

``lexical_weight`` adds that many nats to a candidate whose category words (see
:data:`nm_toolkit.llm.context.POI_CATEGORIES`) occur in the request itself (0: the model alone).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from nm_toolkit.llm.completion_data import KINDS, render_prompt, suggested_by_category
from nm_toolkit.llm.context import POI_CATEGORIES, LocationContext, PointOfInterest
from nm_toolkit.llm.generation import AdapterLM, Generation

ScoreMode = Literal["category", "mean", "sum"]
SCORE_MODES: tuple[str, ...] = ("category", "mean", "sum")


@dataclass(frozen=True)
class Candidate:
    """One completed prompt the edge could send: a request of ``kind`` for the place of ``category``
    to suggest, rendered."""

    category: str
    place: PointOfInterest
    text: str
    span_chars: int  # length of the kind- and category-bearing prefix of ``text`` ("Find an open pharmacy")
    kind: str = "nearest"


def candidates(
    context: LocationContext, categories: Sequence[str] | None = None, kinds: Sequence[str] | None = None
) -> list[Candidate]:
    """The candidate completions of a request made in ``context``: for every category (default: all
    of :data:`POI_CATEGORIES`, in that order) that has a place in the cell and every kind (default:
    :data:`KINDS`, in that order, within each category), the completed prompt naming the place of
    that category to suggest to the context's user (the nearest that meets the profile's need,
    :func:`~nm_toolkit.llm.completion_data.suggested_by_category`). Computed from the context
    store, never generated."""
    suggested = suggested_by_category(context.cell.pois, context.profile)
    out = []
    for category in categories if categories is not None else POI_CATEGORIES:
        if category not in suggested:
            continue
        for kind in kinds if kinds is not None else KINDS:
            text = render_prompt(category, suggested[category], context, kind)
            span = text.find(category) + len(category)
            out.append(Candidate(category, suggested[category], text, span, kind))
    return out


@dataclass(frozen=True)
class GroundedChoice:
    """The candidates of one request, their scores, and the one chosen.

    ``probabilities`` is the softmax over ``scores``; :attr:`confidence` is the chosen candidate's
    probability and :attr:`margin` its lead over the runner-up (both in [0, 1]), for a router that
    escalates uncertain requests.
    """

    candidates: tuple[Candidate, ...]
    scores: tuple[float, ...]
    probabilities: tuple[float, ...]
    best: int

    @property
    def chosen(self) -> Candidate:
        return self.candidates[self.best]

    @property
    def confidence(self) -> float:
        return self.probabilities[self.best]

    @property
    def margin(self) -> float:
        others = [p for i, p in enumerate(self.probabilities) if i != self.best]
        return self.confidence - max(others, default=0.0)


@dataclass(frozen=True)
class GroundedGeneration(Generation):
    """A completion chosen among grounded candidates (``new_tokens``: the tokens of its text)."""

    choice: GroundedChoice


def softmax(scores: Sequence[float]) -> list[float]:
    top = max(scores)
    weights = [math.exp(s - top) for s in scores]
    total = sum(weights)
    return [w / total for w in weights]


class GroundedChooser:
    """Ranks grounded candidates under an edge model (see the module's docstring for ``score``)."""

    def __init__(self, lm: AdapterLM, score: ScoreMode = "category", lexical_weight: float = 0.0) -> None:
        if score not in SCORE_MODES:
            raise ValueError(f"score must be one of {', '.join(SCORE_MODES)}, not {score!r}")
        self.lm = lm
        self.score = score
        self.lexical_weight = lexical_weight

    def choose(
        self,
        model_inputs: Sequence[str],
        contexts: Sequence[LocationContext],
        adapters: Sequence[str] | None = None,
        requests: Sequence[str] | None = None,
    ) -> list[GroundedChoice]:
        """One choice per request: ``model_inputs[i]`` is its edge input, ``contexts[i]`` its context,
        ``adapters[i]`` the adapter that scores it (default: the base model), ``requests[i]`` the
        user's words (needed only for ``lexical_weight``). All candidates of all requests are
        scored in one batched pass over a KV cache of the edge inputs
        (:meth:`~nm_toolkit.llm.generation.AdapterLM.shared_prefix_logprobs`)."""
        if len(model_inputs) != len(contexts):
            raise ValueError(f"{len(model_inputs)} inputs for {len(contexts)} contexts")
        names = list(adapters) if adapters is not None else None
        per_request = [candidates(c) for c in contexts]
        if any(not found for found in per_request):
            raise ValueError("a cell without places has nothing to choose from")
        # fine-tuning targets start with a space; the category score needs only the words up to the
        # category (the byte-level tokenizer splits before a space, so they tokenize as in the whole text)
        cut = self.score == "category"
        conts = [[" " + (c.text[: c.span_chars] if cut else c.text) for c in found] for found in per_request]
        logprobs = [lp for rows in self.lm.shared_prefix_logprobs(model_inputs, conts, names) for lp in rows]
        choices, row = [], 0
        for i, found in enumerate(per_request):
            scores = []
            for candidate in found:
                lp = logprobs[row]
                if self.score == "mean":
                    score = sum(lp) / len(lp)
                else:  # "sum", or "category" over the cut continuation
                    score = sum(lp)
                if self.lexical_weight and requests is not None and mentions(requests[i], candidate.category):
                    score += self.lexical_weight
                scores.append(score)
                row += 1
            probabilities = softmax(scores)
            best = max(range(len(scores)), key=scores.__getitem__)
            choices.append(GroundedChoice(tuple(found), tuple(scores), tuple(probabilities), best))
        return choices


def mentions(request: str, category: str) -> bool:
    """Whether the user's words name ``category`` by one of its words (whole words, any case)."""
    words = POI_CATEGORIES.get(category, ()) + (category,)
    return any(re.search(rf"(?<!\w){re.escape(w)}(?!\w)", request, re.IGNORECASE) for w in words)
