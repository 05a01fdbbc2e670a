"""The built-in operator-intent extractor: trained on first use from the labelled intents that come
with the toolkit, and cached under the state directory, so that ``nmt intent parse`` and ``nmt
intent serve`` work before anyone has run ``nmt intent train``.

The labelled intents are the Nile/Lumi-format slice in the source tree (``tests/data``), present in
a checkout and in the editable install ``make`` makes. Where they are missing (an install from a
wheel), the error says how to train an extractor on a file of one's own.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from nm_toolkit.errors import UserError

log = logging.getLogger(__name__)

BUILTIN_METHOD = "vote"
# How the built-in extractor is trained; a cached one trained otherwise is retrained on next use.
# Change it whenever training changes what the extractor reads (issue 25: synthetic policy prose).
RECIPE = "vote on the shipped slice + 600 sentences of synthetic policy prose (issue 25), hyphenated words as one token, grant frame, open-class verbs, access and priority frames"
RECIPE_FILE = "builtin_recipe.txt"
# Where the shipped labelled intents are, relative to the source tree the package runs from.
SHIPPED_INTENTS: tuple[Path, ...] = (Path(__file__).resolve().parents[1] / "tests" / "data" / "nile_intents_slice.json",)


def shipped_intents() -> Path | None:
    """The labelled intents that came with the toolkit, or None when this install has none."""
    return next((path for path in SHIPPED_INTENTS if path.is_file()), None)


def ensure_builtin_extractor(directory: Path, note: Callable[[str], None] = log.warning) -> Path:
    """``directory`` holding a trained extractor: trained from the shipped intents on first use
    (``note`` says so once, since it takes a while), then reused. Training writes to a temporary
    directory beside it and renames it into place, so an interrupted run leaves nothing half-written.
    A cached extractor trained by another :data:`RECIPE` (or before recipes were recorded) is
    retrained, so an upgrade does not keep serving the old one."""
    stale = directory.is_dir() and recipe_of(directory) != RECIPE
    if directory.is_dir() and not stale:
        return directory
    data = shipped_intents()
    if data is None:
        raise UserError(
            f"no operator-intent extractor at {directory} and no built-in intents to train one on: "
            f"train one with `nmt intent train --input NILE_INTENTS.json -o {directory}`"
        )
    from intent.data import load_intents
    from intent.methods import factory

    intents = load_intents(data)
    why = "the built-in intent extractor changed since it was cached: retraining it" if stale else "first use: training the built-in intent extractor"
    note(f"{why} ({BUILTIN_METHOD}, {len(intents)} intents from {data.name} and synthetic policy prose) into {directory}; later runs reuse it")
    directory.parent.mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix=f".{directory.name}-", dir=directory.parent))
    retired: Path | None = None
    try:
        extractor = factory(BUILTIN_METHOD)().fit(intents)
        extractor.save_pretrained(scratch)  # type: ignore[attr-defined]
        (scratch / RECIPE_FILE).write_text(RECIPE)
        if stale:  # out of the way first: a rename does not replace a non-empty directory
            retired = Path(tempfile.mkdtemp(prefix=f".{directory.name}-old-", dir=directory.parent))
            try:
                directory.rename(retired / directory.name)
            except OSError:
                pass  # another process retired it already
        try:
            scratch.rename(directory)
        except OSError:
            if not directory.is_dir():  # another process did not win the race: a real failure
                raise
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        if retired is not None:
            shutil.rmtree(retired, ignore_errors=True)
    return directory


def recipe_of(directory: Path) -> str | None:
    """How the built-in extractor cached in ``directory`` was trained, or None for one from before the recipe was recorded."""
    path = directory / RECIPE_FILE
    return path.read_text() if path.is_file() else None
