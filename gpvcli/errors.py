"""The one exception type the CLI turns into a one-line message.

Raise `GPVError("what is wrong", hint="what to do")` for every failure a user can
cause (missing file, bad JSON, unknown task, mismatched checkpoint). The CLI prints
`error: <message> (<hint>)` and exits non-zero; GPV_DEBUG=1 shows the traceback.
"""

from __future__ import annotations


class GPVError(Exception):
    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message
