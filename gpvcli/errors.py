"""The exception types the CLI turns into a one-line message, and their exit codes.

Raise `GPVError("what is wrong", hint="what to do")` for every failure a user can
cause (missing file, bad JSON, unknown key, bad prompt, mismatched checkpoint): exit
code 2, like a command-line usage error. Raise `GPVRuntimeError` for a run that fails
on good input (a non-finite loss, values beyond what a cache can hold): exit code 1,
as for any unexpected exception. The CLI prints `error: <message> (<hint>)` on one
line; GPV_DEBUG=1 shows the traceback.
"""

from __future__ import annotations


class GPVError(Exception):
    exit_code = 2

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class GPVRuntimeError(GPVError):
    """A failure of the run itself, not of its input (exit code 1)."""

    exit_code = 1


def brief(e: BaseException, limit: int = 160) -> str:
    """A library exception as one short line (its type and the start of its message), to quote in a
    GPVError."""
    text = " ".join(str(e).split())
    if len(text) > limit:
        text = text[:limit - 3].rstrip() + "..."
    return f"{type(e).__name__}: {text}" if text else type(e).__name__
