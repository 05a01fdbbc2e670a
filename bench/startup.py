"""CLI start-up benchmark: how long ``nmt`` commands take to start, next to a bare Python start
measured in the same run.

    python bench/startup.py [-n 5] [--all] [--json]

Each command runs ``-n`` times as a fresh subprocess (in an empty temporary directory, so no
``nmt.toml`` is read); runs go round-robin over the commands so load on the machine hits all of
them alike. Reported: median and minimum wall seconds, and the median over the baseline
(``python -c pass``, the interpreter's own start). The commands: ``nmt --help``, every command
group's and top-level command's ``--help``, the service commands' ``--help`` (``collect run``,
``forecast serve``, ``controller run``, ``intent serve``, ``llm serve``, ``decisions tail``) and
``nmt policy list --json``, which does real work (settings, plug-in discovery). ``--all`` adds
every other subcommand's ``--help``.

``nmt`` is the console script next to this interpreter (``python -m nm_toolkit`` without one),
run on the checkout this script is in (put first on ``PYTHONPATH``), so a copy of the script in
another checkout (a git worktree of an older commit) times that one with the same environment.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

EXTRA = [
    ["collect", "run", "--help"],
    ["forecast", "serve", "--help"],
    ["controller", "run", "--help"],
    ["intent", "serve", "--help"],
    ["llm", "serve", "--help"],
    ["decisions", "tail", "--help"],
    ["policy", "list", "--json"],
]


def nmt_command() -> list[str]:
    script = Path(sys.executable).parent / "nmt"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "nm_toolkit"]


def command_args(every_subcommand: bool) -> list[list[str]]:
    """``--help`` of every group and top-level command (and, with ``every_subcommand``, of every
    subcommand), then the fixed extras, without duplicates."""
    import typer

    from nm_toolkit.cli import app

    root = typer.main.get_command(app)  # a click group (typer may vendor its own click)
    out: list[list[str]] = [["--help"]]
    for name, command in sorted(root.commands.items()):  # type: ignore[attr-defined]
        out.append([name, "--help"])
        if every_subcommand and getattr(command, "commands", None):
            out.extend([name, sub, "--help"] for sub in sorted(command.commands))
    out.extend(args for args in EXTRA if args not in out)
    return out


def time_once(argv: list[str], cwd: str, env: dict[str, str]) -> tuple[float, int]:
    start = time.perf_counter()
    proc = subprocess.run(argv, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, check=False)
    return time.perf_counter() - start, proc.returncode


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--repeat", type=int, default=5, help="runs per command (default 5)")
    parser.add_argument("--all", action="store_true", help="also every subcommand's --help")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    args = parser.parse_args()

    nmt = nmt_command()
    commands: list[tuple[str, list[str]]] = [("python -c pass (baseline)", [sys.executable, "-c", "pass"])]
    commands += [("nmt " + " ".join(a), [*nmt, *a]) for a in command_args(args.all)]
    samples: dict[str, list[float]] = {label: [] for label, _ in commands}
    failures: dict[str, int] = {}
    with tempfile.TemporaryDirectory(prefix="nmt-startup-") as cwd:
        env = {k: v for k, v in os.environ.items() if not k.startswith("NMT_") or k == "NMT_KAFKA_HOME"}
        env["NMT_STATE_DIR"] = str(Path(cwd) / "state")
        env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])
        for _ in range(args.repeat):
            for label, argv in commands:
                seconds, rc = time_once(argv, cwd, env)
                samples[label].append(seconds)
                if rc != 0:
                    failures[label] = rc
    baseline = statistics.median(samples[commands[0][0]])
    rows = [
        {
            "command": label, "median_s": round(statistics.median(s), 3), "min_s": round(min(s), 3),
            "over_baseline_s": round(statistics.median(s) - baseline, 3), "exit_code": failures.get(label, 0),
        }
        for label, s in samples.items()
    ]  # fmt: skip
    if args.json:
        print(json.dumps({"repeat": args.repeat, "nmt": nmt, "python": sys.version.split()[0], "rows": rows}, indent=2))
        return

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"nmt start-up, {args.repeat} runs each ({' '.join(nmt)})", header_style="bold")
    for column, justify in (("command", "left"), ("median s", "right"), ("min s", "right"), ("median - baseline s", "right")):
        table.add_column(column, justify=justify)  # type: ignore[arg-type]
    for row in rows:
        failed = f" [red](exit {row['exit_code']})[/]" if row["exit_code"] else ""
        table.add_row(f"{row['command']}{failed}", f"{row['median_s']:.3f}", f"{row['min_s']:.3f}", f"{row['over_baseline_s']:+.3f}")
    Console().print(table)


if __name__ == "__main__":
    main()
