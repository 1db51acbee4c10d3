"""The `gpv` command: a thin Typer layer over plain functions.

Each command lives in its own module and calls one core function. Every failure is
printed here as one `error:` line: a GPVError (bad usage or input) exits with code 2,
a GPVRuntimeError (a full disk included) or any unexpected exception with code 1, a training
stopped by SIGTERM / SIGINT (`stopped:`) with 143 / 130. GPV_DEBUG=1 shows the traceback instead.
The command line's own usage errors (a misspelt option or command, a missing argument) are printed
the same way by `main`, with exit code 2.
"""

from __future__ import annotations

import errno
import functools
import os
import sys
from collections.abc import Callable

import typer
from rich.console import Console
from rich.markup import escape

from gpvcli.errors import DiskFullError, GPVError, brief
from gpvcli.io import free_bytes

app = typer.Typer(
    name="gpv",
    help="GPV-1, a general purpose vision model: build data, train, evaluate, ablate, predict.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
err_console = Console(stderr=True)


def one_line_errors(command: Callable, output_option: str = "--out") -> Callable:
    """`command` with its failures printed as one `error:` line on stderr and ended with the exit code of
    their kind (see the module docstring), so that `typer.testing.CliRunner` sees what a user sees. A full
    disk names `output_option`, the command's option that chooses where it writes."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except (typer.Exit, typer.Abort):
            raise
        except Exception as e:
            if os.environ.get("GPV_DEBUG") == "1":
                raise
            if isinstance(e, OSError) and e.errno == errno.ENOSPC:      # a write outside gpvcli.io's helpers
                e = DiskFullError(e.filename or "a file", needed=0, free=free_bytes(e.filename or "."))
            if isinstance(e, DiskFullError):
                e.option = output_option
            if isinstance(e, GPVError):
                text, code, label = str(e), e.exit_code, e.label
            else:
                text, code, label = f"unexpected {brief(e)} (rerun with GPV_DEBUG=1 for the traceback)", 1, "error"
            print_error(text, label)
            raise typer.Exit(code) from None
    return run


def _register() -> None:
    from gpvcli.cli import ablate, evaluate, info, predict, prepare, quickstart, report, synth, train

    app.command("quickstart")(one_line_errors(quickstart.quickstart_command, "--runs"))
    app.command("synth")(one_line_errors(synth.synth_command, "OUT"))
    app.command("prepare")(one_line_errors(prepare.prepare_command))
    app.command("train")(one_line_errors(train.train_command, "--run"))
    app.command("evaluate")(one_line_errors(evaluate.evaluate_command))
    app.command("predict")(one_line_errors(predict.predict_command))
    app.command("ablate")(one_line_errors(ablate.ablate_command))
    app.command("report")(one_line_errors(report.report_command))
    app.command("info")(one_line_errors(info.info_command))


_register()


def print_error(text: str, label: str = "error") -> None:
    """`LABEL: text` on stderr (error, or stopped for a training stopped by a signal), on one line, brackets
    shown as they are."""
    err_console.print(f"[bold red]{label}:[/] {escape(' '.join(text.split()))}", highlight=False, soft_wrap=True)


def main() -> None:
    """The `gpv` entry point: the app, with the command line's usage errors as one `error:` line (exit 2)."""
    try:
        code = app(standalone_mode=False)
    except typer.Abort:
        print_error("aborted")
        code = 1
    except typer.TyperException as e:                          # Click's usage errors derive from it
        message, ctx = e.format_message() if hasattr(e, "format_message") else str(e), getattr(e, "ctx", None)
        if message.strip():                                     # empty: the help, already shown (no command)
            print_error(f"{message} (see {ctx.command_path if ctx is not None else 'gpv'} --help)")
        code = e.exit_code
    sys.exit(code if isinstance(code, int) else 0)
