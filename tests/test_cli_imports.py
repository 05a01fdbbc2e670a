"""What a fresh ``nmt`` start imports: commands that load no model must not pay for torch.

Each check imports in a new interpreter (this test session may already hold torch) and lists the
heavy modules left in ``sys.modules``; it checks imports, not timings (``bench/startup.py`` times).
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

MODEL_STACK = ("torch", "transformers", "peft")
# what `import nm_toolkit.cli` and building its command tree (every `nmt` start) must not import either
CLI_HEAVY = (*MODEL_STACK, "matplotlib", "sklearn", "scipy", "statsmodels", "pandas")


def _loaded_after(code: str, watch: tuple[str, ...]) -> list[str]:
    script = f"import json, sys\n{code}\nprint(json.dumps([m for m in {list(watch)!r} if m in sys.modules]))"
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_cli_and_its_command_tree_import_no_model_stack() -> None:
    code = "import typer\nimport nm_toolkit.cli\ntyper.main.get_command(nm_toolkit.cli.app)"
    assert _loaded_after(code, CLI_HEAVY) == []


@pytest.mark.parametrize("module", ["collectors.service", "forecasting.service", "nm_toolkit.controller.runner"])
def test_services_import_no_model_stack(module: str) -> None:
    assert _loaded_after(f"import {module}", MODEL_STACK) == []


def test_forecast_registry_imports_models_only_when_built() -> None:
    code = "from forecasting.registry import MODEL_NAMES, make_model\nassert 'llm' in MODEL_NAMES"
    assert _loaded_after(code, ("sklearn", "scipy", "statsmodels", *MODEL_STACK)) == []
