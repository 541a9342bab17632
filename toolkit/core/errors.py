"""Exceptions that map onto the contract's exit codes.

`UserError` (exit 2) is bad usage or bad input: its message is printed as one line, no
traceback. `CheckFailed` (exit 1) is a check that ran and did not pass (parity thresholds,
data check). Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import os
from typing import Any

# `--debug` anywhere on the command line sets it: tracebacks, and the libraries' own logs, shown.
DEBUG_ENV = "TOOLKIT_DEBUG"


def debug_enabled() -> bool:
    return os.environ.get(DEBUG_ENV, "") not in ("", "0")


class ToolkitError(Exception):
    """Base class of the toolkit's own, expected failures."""

    exit_code = 2


class UserError(ToolkitError):
    """Bad usage or bad input: one clear line, exit code 2."""

    exit_code = 2


class CheckFailed(ToolkitError):
    """A check ran to completion and failed: exit code 1."""

    exit_code = 1


class MissingDependency(UserError):
    """An optional backend is not installed; the message says how to install the extra that has
    it, for this install (`toolkit.core.install.install_hint`). `plural`: `what` names several."""

    def __init__(self, what: str, extra: str | None, *, plural: bool = False):
        from .install import install_hint

        super().__init__(f"{what} {'are' if plural else 'is'} not installed: {install_hint(extra)}")
        self.what = what
        self.extra = extra


def first_line(error: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (or its type name): third-party errors
    (ONNX Runtime, torch.load, pickle) can span many lines, and ours must fit on one."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def positive(value: Any, flag: str) -> Any:
    """`value` when it is 1 or more (None passes: "not given"); else one line naming `flag`:
    the one home of every "must be a positive number" rule, so the CLI and a Python caller read
    the same line."""
    if value is not None and not value >= 1:
        raise UserError(f"{flag} must be a positive number, got {value}")
    return value
