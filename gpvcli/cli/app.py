"""The `gpv` command: a thin Typer layer over plain functions.

Each command lives in its own module and calls one core function. Every failure a
user can cause is a GPVError, printed here as one line with a non-zero exit code;
GPV_DEBUG=1 shows the traceback instead.
"""

from __future__ import annotations

import os
import sys

import typer
from rich.console import Console

from gpvcli.errors import GPVError

app = typer.Typer(
    name="gpv",
    help="GPV-1, a general purpose vision model: build data, train, evaluate, ablate, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)

def _register() -> None:
    from gpvcli.cli import ablate, evaluate, info, predict, prepare, quickstart, report, synth, train

    app.command("quickstart")(quickstart.quickstart_command)
    app.command("synth")(synth.synth_command)
    app.command("prepare")(prepare.prepare_command)
    app.command("train")(train.train_command)
    app.command("evaluate")(evaluate.evaluate_command)
    app.command("predict")(predict.predict_command)
    app.command("ablate")(ablate.ablate_command)
    app.command("report")(report.report_command)
    app.command("info")(info.info_command)


_register()


def main() -> None:
    try:
        app()
    except GPVError as e:
        if os.environ.get("GPV_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]error:[/] {e}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except Exception as e:
        if os.environ.get("GPV_DEBUG") == "1":
            raise
        err_console.print(f"[bold red]error:[/] unexpected {type(e).__name__}: {e} "
                          "(rerun with GPV_DEBUG=1 for the traceback)", highlight=False, soft_wrap=True)
        sys.exit(1)
