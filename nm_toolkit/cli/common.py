"""Options and helpers shared by command groups."""

from __future__ import annotations

from pathlib import Path

import typer

from nm_toolkit.config import Settings, load_settings

ConfigOption = typer.Option(None, "--config", "-c", help="TOML settings file (default: ./nmt.toml if present)")


def settings_from(config: Path | None) -> Settings:
    return load_settings(config)
