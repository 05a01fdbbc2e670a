"""The extraction methods by name, and operator-intent parsing on top of any of them."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from nm_toolkit.errors import UserError

if TYPE_CHECKING:  # imported where used: the CLI reads METHODS for its options at every start
    from intent.evaluation import SpanExtractor
    from intent.schema import NeedsClarification, OperatorIntent

Method = Literal["vote", "semicrf", "spanlr", "sklearn", "llm"]
METHODS: tuple[str, ...] = ("vote", "semicrf", "spanlr", "sklearn", "llm")
BEST_METHOD: Method = "vote"  # highest micro-F1 in cross-validation (bench/RESULTS.md, "Intent extraction")


def factory(method: str, base_model: Path | None = None) -> Callable[[], SpanExtractor]:
    """A constructor of a fresh, unfitted extractor of ``method``.

    ``base_model`` (a checkpoint from ``nmt model init``) is what every LLM extractor starts from;
    without it each one pre-trains its own base in-process, which cross-validation would repeat per fold.
    """
    if method == "vote":
        from intent.ensemble import VotingIntentTagger

        return VotingIntentTagger
    if method in ("semicrf", "spanlr"):
        from intent.span import SpanIntentTagger, SpanTaggerConfig

        span_config = SpanTaggerConfig(objective="segmentation" if method == "semicrf" else "per_span")
        return lambda: SpanIntentTagger(span_config)
    if method == "sklearn":
        from intent.tagger import SklearnIntentTagger

        return SklearnIntentTagger
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


def parse_operator_intents(extractor: SpanExtractor, texts: Sequence[str]) -> list[OperatorIntent | NeedsClarification]:
    """Operator intents of ``texts``; LLM output is grounded and validated, failures clarified."""
    from intent.llm_extractor import LlmIntentExtractor
    from intent.llm_output import parse_llm_output
    from intent.schema import NeedsClarification
    from intent.structure import structure

    results: list[OperatorIntent | NeedsClarification] = []
    if isinstance(extractor, LlmIntentExtractor):
        for text, output in zip(texts, extractor.generate(texts), strict=True):
            parsed = parse_llm_output(text, output)
            results.append(NeedsClarification(text=text, reason=parsed.error) if parsed.error else structure(text, parsed.spans))
        return results
    return [structure(text, spans) for text, spans in zip(texts, extractor.predict_spans(texts), strict=True)]
