"""The `toolkit` command line: a thin Typer shell over the library.

Each area has its own module that registers its commands on `app`; none of them imports
torch at module level, so `toolkit infer --model m.onnx` works on the edge install.
`main()` turns the toolkit's own errors into one line on stderr and the contract's exit
codes (2 bad input, 1 failed check); `--debug` anywhere on the line shows the traceback.
"""

from __future__ import annotations

import os
import sys
import traceback
from typing import Any

import typer
import typer.core

from ..core.errors import DEBUG_ENV, ToolkitError, debug_enabled


class _TidyHelp:
    """Help that reads like the rest of it: a flag shows no `<bool>` (it takes no value), and an
    argument is named in capitals (`OLD`, `SOURCE`), as `[OPTIONS]` is."""

    def get_params(self, ctx: Any) -> list[Any]:
        params = super().get_params(ctx)  # type: ignore[misc]
        for param in params:
            if getattr(param, "is_flag", False) and param.metavar is None:
                param.metavar = ""
            elif isinstance(param, typer.core.TyperArgument) and param.metavar is None and param.name:
                param.metavar = param.name.upper()
        return params


class TidyCommand(_TidyHelp, typer.core.TyperCommand):
    pass


class TidyGroup(_TidyHelp, typer.core.TyperGroup):
    pass


app = typer.Typer(
    cls=TidyGroup,
    name="toolkit",
    help="Train, export, deploy and verify the EVA4 mask + depth network.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _register() -> None:
    from . import data_cmd, deploy_cmd, model_cmd, run_cmd, train_cmd, val_cmd

    data_cmd.data_app.info.cls = TidyGroup
    app.add_typer(data_cmd.data_app, name="data")
    for module in (train_cmd, model_cmd, run_cmd, val_cmd, deploy_cmd):
        module.register(app)
    for group in (app, data_cmd.data_app):
        for command in group.registered_commands:
            if command.cls in (None, typer.core.TyperCommand):
                command.cls = TidyCommand


def main(argv: list[str] | None = None) -> None:
    args = list(sys.argv[1:] if argv is None else argv)
    if "--debug" in args:
        args = [a for a in args if a != "--debug"]
        os.environ[DEBUG_ENV] = "1"
    try:
        code = app(args=args, prog_name="toolkit", standalone_mode=False)
    except ToolkitError as e:
        _fail(str(e), e.exit_code)
    except OSError as e:
        where = f"{e.filename}: " if getattr(e, "filename", None) else ""
        _fail(f"{where}{e.strerror or e}", 2)
    except KeyboardInterrupt:
        _fail("interrupted", 130)
    except Exception as e:
        # Typer's (vendored) Click errors: usage mistakes, bad option values, Abort.
        if not hasattr(e, "exit_code"):
            raise
        if type(e).__name__ == "Abort":
            _fail("aborted", 130)
        message = e.format_message() if hasattr(e, "format_message") else str(e)
        if not message.strip():  # no_args_is_help: the help was printed already
            raise SystemExit(e.exit_code) from None
        ctx = getattr(e, "ctx", None)
        where = getattr(ctx, "command_path", "toolkit") if ctx is not None else "toolkit"
        _fail(f"{message} (see `{where} --help`)", int(e.exit_code))
    raise SystemExit(code if isinstance(code, int) else 0)


def _fail(message: str, code: int) -> None:
    if debug_enabled():
        traceback.print_exc()
    line = " ".join(str(message).split())  # always one line
    print(f"error: {line}", file=sys.stderr)
    raise SystemExit(code)


_register()
