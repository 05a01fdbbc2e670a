"""The ``nmt`` command line. Each command group lives in its own module and is added here."""

from __future__ import annotations

import logging
import sys

import typer

from nm_toolkit.cli import collect, controller, deadletters, decisions, demo, dev, forecast, intent, llm, model, policy
from nm_toolkit.cli.output import err_console
from nm_toolkit.errors import UserError

app = typer.Typer(
    name="nmt",
    help="nm-toolkit: telemetry collectors, forecasting, LLMs, intents, policies and SDN control.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(dev.app, name="dev")
app.add_typer(collect.app, name="collect")
app.add_typer(forecast.app, name="forecast")
app.add_typer(policy.app, name="policy")
app.add_typer(decisions.app, name="decisions")
app.add_typer(deadletters.app, name="dead-letters")
app.add_typer(controller.app, name="controller")
app.command("demo")(demo.demo)
app.add_typer(model.app, name="model")
app.add_typer(llm.app, name="llm")
app.add_typer(intent.app, name="intent")


def main() -> None:
    """Console-script entry point: user errors become one line on stderr and exit code 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        app()
    except UserError as exc:
        err_console.print(f"[bold red]error:[/] {exc}")
        sys.exit(2)
