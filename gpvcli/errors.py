"""The exception types the CLI turns into a one-line message, and their exit codes.

Raise `GPVError("what is wrong", hint="what to do")` for every failure a user can
cause (missing file, bad JSON, unknown key, bad prompt, mismatched checkpoint): exit
code 2, like a command-line usage error. Raise `GPVRuntimeError` for a run that fails
on good input (a non-finite loss, values beyond what a cache can hold): exit code 1,
as for any unexpected exception. The CLI prints `error: <message> (<hint>)` on one
line; GPV_DEBUG=1 shows the traceback. Two failures of the machine rather than the run have their own
type: `DiskFullError` (no space left while writing; exit code 1) and `Interrupted` (training stopped by
SIGTERM or SIGINT after saving last/; exit code 128 + the signal number: 143, 130).
"""

from __future__ import annotations


class GPVError(Exception):
    exit_code = 2
    label = "error"                      # the word the CLI prints before the message

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


def megabytes(n: int) -> str:
    return f"{n / 1e6:.1f}" if n < 10e6 else f"{n / 1e6:.0f}"


class DiskFullError(GPVRuntimeError):
    """No space left on the device while writing `path`: about `needed` bytes needed, `free` free. The
    CLI names its own output option (`option`) in the hint."""

    def __init__(self, path, *, needed: int, free: int, option: str = "--out"):
        super().__init__("no space left on device")
        self.path, self.needed, self.free, self.option = path, needed, free, option

    def __str__(self) -> str:
        return (f"no space left on device while writing {self.path} (about {megabytes(self.needed)} MB needed, "
                f"{megabytes(self.free)} MB free; free space or choose another {self.option})")


class Interrupted(GPVError):
    """Training stopped by a signal after saving its last/ checkpoint (exit code 128 + the signal number)."""

    label = "stopped"

    def __init__(self, message: str, *, signum: int, hint: str | None = None):
        super().__init__(message, hint=hint)
        self.exit_code = 128 + signum
