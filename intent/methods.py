"""The extraction methods by name, and operator-intent parsing on top of any of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nm_toolkit.errors import UserError

if TYPE_CHECKING:  # imported where used: the CLI reads METHODS for its options at every start
    from intent.data import Span
    from intent.evaluation import SpanExtractor
    from intent.schema import NeedsClarification, OperatorIntent

Method = Literal["vote", "semicrf", "spanlr", "sklearn", "llm"]
METHODS: tuple[str, ...] = ("vote", "semicrf", "spanlr", "sklearn", "llm")
BEST_METHOD: Method = "vote"  # highest micro-F1 on the policy-prose development set, abstentions counted as misses (bench/RESULTS.md, issue 25)


def factory(method: str, base_model: Path | None = None) -> Callable[[], SpanExtractor]:
    """A constructor of a fresh, unfitted extractor of ``method``.

    ``base_model`` (a checkpoint from ``nmt model init``) is what every LLM extractor starts from;
    without it each one pre-trains its own base in-process, which cross-validation would repeat per fold.
    """
    if method == "vote":
        from intent.ensemble import VotingIntentTagger

        return VotingIntentTagger
    if method in ("semicrf", "spanlr"):
        from intent.augment import AugmentedExtractor
        from intent.span import SpanIntentTagger, SpanTaggerConfig

        span_config = SpanTaggerConfig(objective="segmentation" if method == "semicrf" else "per_span")
        return lambda: AugmentedExtractor(SpanIntentTagger(span_config))  # type: ignore[return-value]
    if method == "sklearn":
        from intent.augment import AugmentedExtractor
        from intent.tagger import SklearnIntentTagger

        return lambda: AugmentedExtractor(SklearnIntentTagger())  # type: ignore[return-value]
    if method == "llm":
        from intent.llm_extractor import LlmIntentConfig, LlmIntentExtractor

        config = LlmIntentConfig(base_model=str(base_model) if base_model else None)
        return lambda: LlmIntentExtractor(config)
    raise UserError(f"unknown method {method!r}: choose one of {', '.join(METHODS)}")


def load(directory: Path) -> SpanExtractor:
    """A trained extractor of any kind from ``nmt intent train -o DIR``."""
    from intent.ensemble import VotingIntentTagger
    from intent.llm_extractor import CONFIG_FILE as LLM_CONFIG
    from intent.llm_extractor import LlmIntentExtractor
    from intent.saved import saved_method
    from intent.span import SpanIntentTagger
    from intent.tagger import SklearnIntentTagger

    if (directory / LLM_CONFIG).is_file():
        return LlmIntentExtractor.from_pretrained(directory)
    method = saved_method(directory)
    if method == "vote":
        return VotingIntentTagger.from_pretrained(directory)
    if method in ("semicrf", "spanlr"):
        return SpanIntentTagger.from_pretrained(directory, method)
    return SklearnIntentTagger.from_pretrained(directory)


# entity types whose value names a thing the network must recognise: an unknown one is asked about
NAMED_TYPES: tuple[str, ...] = ("service", "protocol", "middlebox")


def known_words(extractor: object) -> set[str] | None:
    """Lower-case words the extractor has seen (its training vocabulary), or None when it cannot say."""
    if hasattr(extractor, "known_words"):
        return extractor.known_words()  # type: ignore[no-any-return]
    vocabulary = getattr(extractor, "vocabulary_", None)
    if isinstance(vocabulary, dict):
        return {name[3:] for name in vocabulary if name.startswith("in=")}
    return None


def unknown_values(spans: Sequence[Span], known: set[str] | None) -> list[str]:
    """Why each named value (service, protocol, middlebox) is not one the extractor knows: none of
    its words was seen in training nor is in :mod:`intent.lexicon`."""
    from intent.data import tokenize
    from intent.lexicon import word_classes

    if known is None:
        return []
    reasons = []
    for span in spans:
        words = [t.text.lower() for t in tokenize(span.text) if t.text.isalpha()]
        if span.type in NAMED_TYPES and words and not any(w in known or word_classes(w) for w in words):
            reasons.append(f"{span.text!r} read as a {span.type}, but it is not one the extractor knows")
    return reasons


def unread_names(text: str, spans: Sequence[Span], known: set[str] | None) -> list[str]:
    """Why each word that looks like a name (a capital letter after the first word: "Zorblx",
    "iCloud") is a doubt: the extractor neither knows it nor read it into any span, so the intent
    may be about something it did not see ("Block Zorblx for all contractors" is not "block all
    traffic of contractors")."""
    from intent.data import tokenize
    from intent.lexicon import word_classes

    if known is None:
        return []
    reasons = []
    for token in tokenize(text)[1:]:
        word = token.text
        if not word.isalpha() or word.islower() or word.lower() in known or word_classes(word.lower()):
            continue
        if not any(span.start <= token.start and token.end <= span.end for span in spans):
            reasons.append(f"{word!r} looks like a name the extractor does not know, and it read it as nothing")
    return reasons


def predict_with_doubts(extractor: SpanExtractor, texts: Sequence[str]) -> list[tuple[list[Span], list[str], str | None]]:
    """Spans of each text (abstained ones included), the doubts about them (members' disagreement,
    unknown named values, unknown names left out of every span), and the text of the first span in
    doubt, where a span is."""
    from intent.evaluation import predict_abstaining

    known = known_words(extractor)
    out = []
    for text, (kept, abstained) in zip(texts, predict_abstaining(extractor, texts), strict=True):
        spans = sorted([*kept, *(a.span for a in abstained)], key=lambda s: (s.start, s.end))
        unknown = unknown_values(spans, known)
        doubts = [a.reason for a in abstained] + unknown + unread_names(text, spans, known)
        named = [s.text for s in spans if s.type in NAMED_TYPES and unknown_values([s], known)]
        out.append((spans, doubts, abstained[0].span.text if abstained else named[0] if named else None))
    return out


def parse_operator_intents(extractor: SpanExtractor, texts: Sequence[str]) -> list[OperatorIntent | NeedsClarification]:
    """Operator intents of ``texts``; LLM output is grounded and validated, failures clarified.

    An intent the span extractors are unsure of (:func:`predict_with_doubts`) is not returned as
    an intent but as a clarification that says what is in doubt."""
    from intent.clauses import unread_clauses
    from intent.llm_extractor import LlmIntentExtractor
    from intent.llm_output import parse_llm_output
    from intent.schema import NeedsClarification, OperatorIntent
    from intent.structure import structure

    results: list[OperatorIntent | NeedsClarification] = []
    if isinstance(extractor, LlmIntentExtractor):
        for text, output in zip(texts, extractor.generate(texts), strict=True):
            parsed = parse_llm_output(text, output)
            results.append(NeedsClarification(text=text, reason=parsed.error) if parsed.error else structure(text, parsed.spans))
        return results
    for text, (spans, doubts, abstained) in zip(texts, predict_with_doubts(extractor, texts), strict=True):
        result = structure(text, spans)
        if isinstance(result, OperatorIntent) and (doubts or (unread := unread_clauses(text, spans))):
            if doubts:
                result = NeedsClarification(text=text, reason="unsure: " + "; ".join(doubts) + ": please rephrase or confirm", span=abstained)
            else:
                clause, reason = unread[0]
                result = NeedsClarification(text=text, reason=f"{reason} ({len(unread)} such clause{'s' * (len(unread) > 1)})", span=clause)
        results.append(result)
    return results
