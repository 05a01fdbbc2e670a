"""Constrained decoding of the intent JSON: the model can only write what the schema allows.

The allowed outputs are the compact JSON that :func:`intent.llm_output.target_json` writes::

    {}   or   {"<type>":[" <span>",...],...}

with entity types from :data:`intent.schema.ENTITY_TYPES` in their canonical order (each at most
once) and every span a run of whole words of the input text, the spans of one list in text order.
The grammar is checked character by character, so it holds however the tokenizer splits the output
(one token may close a span and open the next key; a span's tokens may differ from the prompt's).
The model still chooses which types and which spans; it can no longer write broken JSON, unknown
keys or text that is not in the operator's intent.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import torch

from intent.data import tokenize
from intent.schema import ENTITY_TYPES

if TYPE_CHECKING:  # transformers is imported at run time only after nm_toolkit.llm has pinned the hub offline
    from transformers import PreTrainedTokenizerBase

_FORBIDDEN_IN_SPAN = frozenset('"\\') | frozenset(chr(i) for i in range(32))


@dataclass(frozen=True)
class State:
    """Where the output stands: ``phase`` and what the phase needs to continue.

    ``literal`` is the text still expected before ``after`` (phase "literal"); ``typed`` the key or
    span written so far; ``starts`` the word offsets where the span being written may begin;
    ``last_type`` the index of the latest key; ``min_start`` where the next span of the list may begin.
    """

    phase: str
    typed: str = ""
    starts: tuple[int, ...] = ()
    last_type: int = -1
    min_start: int = 0
    literal: str = ""
    after: State | None = None


START = State("literal", literal="{", after=State("open"))


class IntentGrammar:
    """The output language for one input text; :meth:`step` advances a :class:`State` by one character."""

    def __init__(self, text: str, types: Sequence[str] = ENTITY_TYPES) -> None:
        words = tokenize(text)
        self.text = text
        self.types = tuple(types)
        self.word_starts = tuple(w.start for w in words)
        self.word_ends = frozenset(w.end for w in words)

    def _span(self, min_start: int, last_type: int) -> State | None:
        starts = tuple(a for a in self.word_starts if a >= min_start)
        return State("span", starts=starts, last_type=last_type) if starts else None

    def _key(self, last_type: int) -> State | None:
        return State("key", last_type=last_type) if last_type + 1 < len(self.types) else None

    def step(self, state: State, ch: str) -> State | None:
        """The state after writing ``ch``, or None when ``ch`` leaves the language (or a dead end)."""
        phase = state.phase
        if phase == "literal":
            if ch != state.literal[0]:
                return None
            return state.after if len(state.literal) == 1 else State("literal", literal=state.literal[1:], after=state.after)
        if phase == "open":
            return State("done") if ch == "}" else self._key(-1) if ch == '"' else None
        if phase == "key":
            if ch == '"':
                if state.typed not in self.types[state.last_type + 1 :]:
                    return None
                span = self._span(0, self.types.index(state.typed))
                return State("literal", literal=':[" ', after=span) if span else None
            typed = state.typed + ch
            return replace(state, typed=typed) if any(t.startswith(typed) for t in self.types[state.last_type + 1 :]) else None
        if phase == "span":
            if ch == '"':
                ends = [a + len(state.typed) for a in state.starts if state.typed and a + len(state.typed) in self.word_ends]
                return State("after_span", last_type=state.last_type, min_start=min(ends)) if ends else None
            if ch in _FORBIDDEN_IN_SPAN:
                return None
            at = len(state.typed)
            starts = tuple(a for a in state.starts if a + at < len(self.text) and self.text[a + at] == ch)
            return replace(state, typed=state.typed + ch, starts=starts) if starts else None
        if phase == "after_span":
            if ch == "]":
                return State("after_list", last_type=state.last_type)
            span = self._span(state.min_start, state.last_type) if ch == "," else None
            return State("literal", literal='" ', after=span) if span else None
        if phase == "after_list":
            if ch == "}":
                return State("done")
            key = self._key(state.last_type) if ch == "," else None
            return State("literal", literal='"', after=key) if key else None
        return None  # "done": nothing may follow

    def advance(self, state: State | None, piece: str) -> State | None:
        for ch in piece:
            if state is None:
                return None
            state = self.step(state, ch)
        return state


class _Node:
    __slots__ = ("children", "ids")

    def __init__(self) -> None:
        self.children: dict[str, _Node] = {}
        self.ids: list[int] = []


class VocabularyTrie:
    """Every ordinary token's decoded text in a character trie, so that the tokens allowed after a
    state are found by walking the grammar and the trie together instead of testing each token."""

    def __init__(self, tokenizer: PreTrainedTokenizerBase) -> None:
        self.root = _Node()
        self.pieces: dict[int, str] = {}
        special = set(tokenizer.all_special_ids)
        for token_id in range(len(tokenizer)):
            piece = tokenizer.decode([token_id])
            if token_id in special or not piece or "\ufffd" in piece:
                continue  # special tokens and partial UTF-8 sequences are never allowed in the JSON
            self.pieces[token_id] = piece
            node = self.root
            for ch in piece:
                node = node.children.setdefault(ch, _Node())
            node.ids.append(token_id)

    def allowed(self, grammar: IntentGrammar, state: State) -> list[int]:
        found: list[int] = []
        stack = [(self.root, state)]
        while stack:
            node, at = stack.pop()
            for ch, child in node.children.items():
                following = grammar.step(at, ch)
                if following is not None:
                    found += child.ids
                    stack.append((child, following))
        return found


class SchemaLogitsProcessor:
    """A transformers logits processor (any ``(input_ids, scores) -> scores`` callable is one): masks every token that would take a row's output out of its text's language; end-of-text is
    allowed only once the JSON is complete. Row ``i`` belongs to ``grammars[i // rows_per_text]``
    (beam search keeps ``num_beams`` rows per text and reorders them, so states are looked up by the
    tokens written so far, not by row). One instance per ``generate`` call."""

    def __init__(self, grammars: Sequence[IntentGrammar], vocabulary: VocabularyTrie, prompt_width: int, eos_id: int, rows_per_text: int = 1) -> None:
        self.grammars = list(grammars)
        self.vocabulary = vocabulary
        self.prompt_width = prompt_width
        self.eos_id = eos_id
        self.rows_per_text = rows_per_text
        self._states: dict[tuple[int, tuple[int, ...]], State | None] = {}

    def _state(self, text: int, written: tuple[int, ...]) -> State | None:
        key = (text, written)
        if key not in self._states:
            before = self._state(text, written[:-1]) if written else START
            token = written[-1] if written else None
            if token is None:
                self._states[key] = before
            elif token == self.eos_id or before is None:
                self._states[key] = None
            else:
                self._states[key] = self.grammars[text].advance(before, self.vocabulary.pieces.get(token, "\0"))
        return self._states[key]

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        mask = torch.full_like(scores, float("-inf"))
        for row, written in enumerate(input_ids[:, self.prompt_width :].tolist()):
            text = row // self.rows_per_text
            state = self._state(text, tuple(written))
            allowed = self.vocabulary.allowed(self.grammars[text], state) if state is not None else []
            if state is None or state.phase == "done":
                allowed.append(self.eos_id)  # finished (or, defensively, off the grammar): only end-of-text
            mask[row, allowed] = 0.0
        return scores + mask
