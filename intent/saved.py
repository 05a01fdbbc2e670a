"""The one JSON file that says which tagger a directory from ``nmt intent train -o DIR`` holds.

Every non-LLM tagger writes its settings there with a ``"method"`` key next to its own weights
file, so :func:`intent.methods.load` can tell them apart and a wrong directory fails with the fix.
"""

from __future__ import annotations

import json
from pathlib import Path

from nm_toolkit.errors import UserError

CONFIG_FILE = "tagger_config.json"


def saved_method(directory: Path) -> str | None:
    """The method a directory was trained with, or None where it holds no tagger config."""
    path = directory / CONFIG_FILE
    return json.loads(path.read_text()).get("method") if path.is_file() else None


def write_config(directory: Path, method: str, settings: dict[str, object]) -> None:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps({"method": method, **settings}, indent=1))


def read_config(directory: Path, method: str, *weights_files: str) -> dict[str, object]:
    """The settings a ``method`` tagger saved in ``directory`` (without the method key), or a
    one-line error saying how to train one there when the config or a weights file is missing."""
    if not all((directory / name).is_file() for name in (CONFIG_FILE, *weights_files)):
        raise UserError(f"{directory} holds no {method} intent tagger: train one with `nmt intent train --method {method} -o {directory}`")
    settings = json.loads((directory / CONFIG_FILE).read_text())
    settings.pop("method", None)
    return settings
