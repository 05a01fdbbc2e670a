"""A majority vote of entity taggers from different model families.

The linear-chain CRF (:mod:`intent.tagger`), the semi-Markov CRF and the per-span classifier
(:mod:`intent.span`) disagree mostly where the labels are uncertain: each gets different spans of
a sentence wrong. Keeping a span (type and boundaries) only when more than half of the members
predict it removes many of those errors while the spans they agree on stay. The kept spans never
overlap: two spans that each have a strict majority share a member that predicted both, and no
member predicts overlapping spans.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from intent.data import LabelledIntent, Span
from intent.evaluation import Abstention, SpanExtractor
from intent.saved import read_config, write_config
from nm_toolkit.errors import UserError

VOTERS: tuple[str, ...] = ("sklearn", "semicrf", "spanlr")


def majority_spans(predictions: Sequence[Sequence[Span]]) -> list[Span]:
    """The spans predicted by more than half of the members, in text order (a pure function)."""
    votes = Counter(span for member in predictions for span in set(member))
    return sorted((span for span, n in votes.items() if 2 * n > len(predictions)), key=lambda s: (s.start, s.end))


class VotingIntentTagger:
    """Fits each member on the same intents; predicts the spans a majority of them predict."""

    def __init__(self, members: Sequence[str] = VOTERS) -> None:
        self.members = tuple(members)

    def fit(self, intents: Sequence[LabelledIntent]) -> VotingIntentTagger:
        from intent.methods import factory

        if not set(self.members) <= set(VOTERS) or len(set(self.members)) != len(self.members) or not self.members:
            raise UserError(f"vote members must be distinct methods among {', '.join(VOTERS)}, got {', '.join(self.members) or 'none'}")
        self.members_: list[SpanExtractor] = [factory(name)().fit(intents) for name in self.members]
        return self

    def predict_spans(self, texts: Sequence[str]) -> list[list[Span]]:
        """Labelled spans of each text (character offsets into that text), abstained ones included."""
        return [sorted([*kept, *(a.span for a in doubts)], key=lambda s: (s.start, s.end)) for kept, doubts in self.predict_abstaining(texts)]

    def predict_abstaining(self, texts: Sequence[str]) -> list[tuple[list[Span], list[Abstention]]]:
        """The majority spans of each text, less those it abstains on: a majority span that a member
        reads nothing of (no span of it overlaps), so the members disagree whether there is an
        entity there at all (on the development set such spans are right less than half the time,
        bench/RESULTS.md issue 25)."""
        out = []
        for text in texts:  # one text at a time: the span members then share its features (intent.span.featurise)
            predictions = [member.predict_spans([text])[0] for member in self.members_]
            kept, doubts = [], []
            for span in majority_spans(predictions):
                blind = [name for name, member in zip(self.members, predictions, strict=True) if not any(s.start < span.end and span.start < s.end for s in member)]
                if blind:
                    doubts.append(Abstention(span, f"{span.text!r} read as {span.type}, but the {' and '.join(blind)} member reads no entity there"))
                else:
                    kept.append(span)
            out.append((kept, doubts))
        return out

    def known_words(self) -> set[str] | None:
        """The words the members saw in training candidates, or None when no member can say."""
        from intent.methods import known_words

        vocabularies = [v for v in (known_words(member) for member in self.members_) if v is not None]
        return set().union(*vocabularies) if vocabularies else None

    # -- persistence: each member in its own subdirectory, in its own format ------------------------
    def save_pretrained(self, directory: Path) -> Path:
        write_config(directory, "vote", {"members": list(self.members)})
        for name, member in zip(self.members, self.members_, strict=True):
            member.save_pretrained(directory / name)  # type: ignore[attr-defined]
        return directory

    @classmethod
    def from_pretrained(cls, directory: Path) -> VotingIntentTagger:
        from intent.methods import load

        tagger = cls(read_config(directory, "vote")["members"])  # type: ignore[arg-type]
        tagger.members_ = [load(directory / name) for name in tagger.members]
        return tagger
