"""Model cards: what was trained, on what, with which seed, and how the loss went (markdown + PNG)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

LOSS_PLOT = "loss_curve.png"
CARD_JSON = "nmt_card.json"  # the card for programs (README.md is the one for people)


def plot_loss(losses: Sequence[float], path: Path, title: str) -> None:
    """A PNG of the per-step training loss and its running mean."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    window = max(1, len(losses) // 20)
    smooth = [sum(losses[max(0, i - window + 1) : i + 1]) / len(losses[max(0, i - window + 1) : i + 1]) for i in range(len(losses))]
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(losses, alpha=0.35, label="loss per step")
    ax.plot(smooth, label=f"running mean ({window} steps)")
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats/token)")
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def loss_table(losses: Sequence[float], rows: int = 10) -> list[tuple[int, float]]:
    """(step, loss) at about ``rows`` evenly spaced steps, always including the last."""
    if not losses:
        return []
    every = max(1, len(losses) // rows)
    picked = list(range(0, len(losses), every))
    if picked[-1] != len(losses) - 1:
        picked.append(len(losses) - 1)
    return [(i + 1, round(losses[i], 4)) for i in picked]


def write_card(directory: Path, title: str, summary: str, facts: Mapping[str, Any], losses: Sequence[float]) -> None:
    """README.md (the card people read), ``nmt_card.json`` (the same facts for programs) and the plot."""
    plot_loss(losses, directory / LOSS_PLOT, title)
    (directory / CARD_JSON).write_text(json.dumps({**facts, "loss_curve": list(losses)}, indent=1, default=str))
    lines = [f"# {title}", "", summary, "", "| field | value |", "|---|---|"]
    lines += [f"| {key} | `{json.dumps(value, default=str)}` |" for key, value in facts.items()]
    lines += ["", "## Loss curve", "", f"![loss curve]({LOSS_PLOT})", "", "| step | loss |", "|---:|---:|"]
    lines += [f"| {step} | {loss} |" for step, loss in loss_table(losses)]
    (directory / "README.md").write_text("\n".join(lines) + "\n")
