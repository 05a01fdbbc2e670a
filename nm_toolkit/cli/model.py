"""``nmt model``: build domain models offline, fine-tune LoRA adapters, list the adapter registry."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from nm_toolkit.cli.output import JsonOption, console, emit
from nm_toolkit.errors import UserError

if TYPE_CHECKING:  # nm_toolkit.llm.* imports torch and transformers: only the commands that train load it
    from nm_toolkit.llm.training import StepCallback

app = typer.Typer(help="Edge and cloud language models: init, LoRA fine-tuning, adapters.", no_args_is_help=True)


@contextmanager
def training_progress(total: int, description: str, quiet: bool) -> Iterator[StepCallback]:
    """A rich progress bar fed by the training loop's per-step callback (silent for --json)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    progress = Progress(
        TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TextColumn("loss {task.fields[loss]:.3f}"),
        TimeRemainingColumn(), console=console, disable=quiet,
    )
    with progress:
        task = progress.add_task(description, total=total, loss=float("nan"))
        yield lambda step, loss: progress.update(task, completed=step + 1, loss=loss)


@app.command()
def init(
    output: Path = typer.Option(..., "-o", "--output", help="directory to write the checkpoint to"),
    arch: str = typer.Option("gpt2", help="gpt2 (edge) or llama (cloud)"),
    preset: str = typer.Option("edge", help="tiny, edge or cloud"),
    steps: int = typer.Option(300, min=1, help="pre-training steps"),
    seed: int = typer.Option(0, help="seed of corpus, tokenizer and weights"),
    intents: Path | None = typer.Option(None, help="Nile-format intents JSON to add to the corpus"),
    cdr: Path | None = typer.Option(None, help="wide hourly CDR CSV to serialise as telemetry in the corpus"),
    batch_size: int = typer.Option(16, min=1, help="documents per pre-training step"),
    corpus_scale: float = typer.Option(1.0, min=0.01, help="generate this many times the default corpus (for long runs)"),
    device: str = typer.Option("cpu", help="train on cpu, cuda or auto (the model is saved for CPU serving)"),
    as_json: bool = JsonOption,
) -> None:
    """Build a causal LM from a config, train its tokenizer, pre-train it briefly, save it with a card."""
    from nm_toolkit.llm.corpus import CorpusConfig
    from nm_toolkit.llm.init import InitConfig, initialise_model, save_initialised
    from nm_toolkit.llm.presets import ARCHS, PRESETS
    from nm_toolkit.llm.training import resolve_device

    if arch not in ARCHS:
        raise UserError(f"unknown --arch {arch!r}: choose one of {', '.join(ARCHS)}")
    if preset not in PRESETS:
        raise UserError(f"unknown --preset {preset!r}: choose one of {', '.join(PRESETS)}")
    if output.exists() and any(output.iterdir()):
        raise UserError(f"{output} is not empty: choose a new directory for the model")
    resolve_device(device)  # fail before the corpus is built, not after
    config = InitConfig(
        arch=arch, preset=preset, steps=steps, batch_size=batch_size, seed=seed, device=device,  # type: ignore[arg-type]
        corpus=CorpusConfig(seed=seed).scaled(corpus_scale), intents_file=intents, cdr_file=cdr,
    )
    with training_progress(steps, f"pre-training {preset} {arch}", as_json) as on_step:
        model, tokenizer, losses, facts = initialise_model(config, on_step)
    save_initialised(output, model, tokenizer, losses, facts)
    summary = {"output": str(output), **{k: facts[k] for k in ("arch", "preset", "parameters", "seed", "train_seconds", "final_loss")}}
    emit(as_json, summary, "model initialised", [summary])


@app.command()
def finetune(
    base: Path = typer.Option(..., help="base checkpoint directory"),
    task: str = typer.Option(..., help="task the adapter serves, e.g. prompt_completion"),
    data: Path = typer.Option(..., help="JSONL training file with 'input' and 'target'"),
    adapter: str = typer.Option(..., help="adapter name in the registry"),
    heldout: Path | None = typer.Option(None, help="JSONL held-out file: report loss before and after"),
    location_group: list[str] = typer.Option([], "--location-group", help="serve requests from this group (repeatable; none: all)"),
    rank: int = typer.Option(16, min=1),
    alpha: int = typer.Option(32, min=1),
    target_modules: str | None = typer.Option(None, help="comma-separated module names (default: per architecture)"),
    epochs: float = typer.Option(3.0, min=0.01),
    learning_rate: float = typer.Option(3e-3, "--lr"),
    batch_size: int = typer.Option(16, min=1),
    seed: int = typer.Option(0),
    device: str = typer.Option("cpu", help="train on cpu, cuda or auto (the adapter is saved for CPU serving)"),
    registry: Path | None = typer.Option(None, help="adapter registry directory (default: settings llm.adapters_dir)"),
    as_json: bool = JsonOption,
) -> None:
    """Fine-tune a LoRA adapter on a base checkpoint and save it to the adapter registry."""
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.completion_data import read_pairs
    from nm_toolkit.llm.deployment import LlmPaths
    from nm_toolkit.llm.lora import AdapterCard, AdapterRegistry, LoraFineTuner, LoraTrainConfig, heldout_loss
    from nm_toolkit.llm.offline import load_causal_lm
    from nm_toolkit.llm.training import resolve_device

    store = AdapterRegistry(registry or LlmPaths.from_settings(load_settings()).adapters_dir)
    store.path(adapter)  # validates the name before any work
    resolve_device(device)
    pairs = read_pairs(data)
    held = read_pairs(heldout) if heldout else []
    model, tokenizer = load_causal_lm(base)
    modules = tuple(m.strip() for m in target_modules.split(",") if m.strip()) if target_modules else None
    config = LoraTrainConfig(
        rank=rank, alpha=alpha, target_modules=modules, epochs=epochs, batch_size=batch_size, learning_rate=learning_rate, seed=seed, device=device
    )
    before = heldout_loss(model, tokenizer, held) if held else None
    tuner = LoraFineTuner(config)
    steps = max(1, round(epochs * len(pairs) / batch_size))
    with training_progress(steps, f"LoRA {adapter}", as_json) as on_step:
        tuner.fit(model, tokenizer, pairs, adapter_name=adapter, on_step=on_step)
    after = tuner.heldout_loss(tokenizer, held) if held else None
    card = AdapterCard(
        name=adapter, task=task, base=str(base.resolve()), location_groups=tuple(location_group), train_examples=tuner.examples_,
        train_seconds=round(tuner.seconds_, 1), heldout_loss_before=before, heldout_loss_after=after,
        config={k: v for k, v in vars(config).items()},
    )
    path = store.save(tuner.model_, card, tuner.losses_)
    summary = {"adapter": adapter, "path": str(path), "examples": tuner.examples_, "seconds": card.train_seconds,
               "heldout_loss_before": before, "heldout_loss_after": after}
    emit(as_json, summary, "adapter trained", [summary])


@app.command()
def adapters(
    registry: Path | None = typer.Option(None, help="adapter registry directory (default: settings llm.adapters_dir)"),
    as_json: bool = JsonOption,
) -> None:
    """List the adapters in the registry with their task and location groups."""
    from nm_toolkit.config import load_settings
    from nm_toolkit.llm.deployment import LlmPaths
    from nm_toolkit.llm.lora import AdapterRegistry

    cards = AdapterRegistry(registry or LlmPaths.from_settings(load_settings()).adapters_dir).cards()
    rows = [{"adapter": c.name, "task": c.task, "location_groups": ",".join(c.location_groups) or "*",
             "examples": c.train_examples, "heldout_loss_after": c.heldout_loss_after, "base": c.base} for c in cards]
    emit(as_json, rows, "adapters")
