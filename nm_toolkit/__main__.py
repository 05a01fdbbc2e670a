"""``python -m nm_toolkit`` is ``nmt``."""

from nm_toolkit.cli import main

main()
