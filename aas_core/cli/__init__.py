"""`python -m aas_core GROUP COMMAND ... [--json]`: one subcommand group per engine.

Each group module exposes `register(subparsers)`; a command handler returns a JSON-ready dict
(printed as one object with --json) and raises AASError/ValueError for user mistakes.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import json
import os
import sys
from pathlib import Path
from typing import Callable, Optional, Sequence

from aas_core.errors import AASError, Cancelled

GROUPS: tuple[str, ...] = ("weights", "library", "generate", "concept", "depth", "story")
"""Modules under aas_core.cli, each adding one subcommand group."""

Handler = Callable[[argparse.Namespace], dict]


def add_command(
    group: "argparse._SubParsersAction", name: str, handler: Handler, help: str
) -> argparse.ArgumentParser:
    """Add a command with the shared --json, --device and --dtype flags; `handler(args) -> dict` runs it."""
    from aas_core.device import DEVICE_CHOICES, DTYPE_CHOICES

    parser = group.add_parser(name, help=help, description=help)
    parser.add_argument("--json", action="store_true", help="print the result as one JSON object on stdout")
    # SUPPRESS: when absent after the command, a value given before it (python -m aas_core --device ...) is kept.
    parser.add_argument("--device", choices=DEVICE_CHOICES, default=argparse.SUPPRESS, help="compute device (default: auto = cuda > mps > cpu)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, default=argparse.SUPPRESS, help="model dtype (default: auto = half on GPU, float32 on CPU)")
    parser.set_defaults(handler=handler)
    return parser


def given(args: argparse.Namespace, **fields: str) -> dict:
    """Keyword arguments for an engine call or dataclass from the flags the user gave (`field=flag_dest`).

    Flags default to None, so whatever was not given falls through to the engine's own default.
    """
    return {name: getattr(args, dest) for name, dest in fields.items() if getattr(args, dest) is not None}


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (every group registered)."""
    from aas_core.device import DEVICE_CHOICES, DTYPE_CHOICES

    parser = argparse.ArgumentParser(prog="python -m aas_core", description="Animate-A-Story engine")
    parser.add_argument("--device", choices=DEVICE_CHOICES, help="compute device (default: auto = cuda > mps > cpu; or $AAS_DEVICE)")
    parser.add_argument("--dtype", choices=DTYPE_CHOICES, help="model dtype (default: auto = half on GPU, float32 on CPU; or $AAS_DTYPE)")
    sub = parser.add_subparsers(dest="group", required=True)
    for name in GROUPS:
        importlib.import_module(f"aas_core.cli.{name}").register(sub)
    return parser


def _print_human(result: dict) -> None:
    text = result.pop("_text", None)
    if text is not None:
        print(text)
        return
    for key, value in result.items():
        if isinstance(value, (list, dict)):
            value = json.dumps(value, indent=2, default=str)
        print(f"{key}: {value}")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the process exit code (2 for user errors, 130 when cancelled)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # Engines resolve device and dtype once through pick_runtime(), which reads these; restored after.
    saved = {key: os.environ.get(key) for key in ("AAS_DEVICE", "AAS_DTYPE")}
    if args.device:
        os.environ["AAS_DEVICE"] = args.device
    if args.dtype:
        os.environ["AAS_DTYPE"] = args.dtype
    try:
        return _run(args)
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _message(exc: BaseException) -> str:
    """The user-facing text of an error; pydantic's (a record built with a bad field) as `field: problem` lines."""
    from pydantic import ValidationError

    if isinstance(exc, ValidationError):
        return "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'value'}: {e['msg']}" for e in exc.errors()[:12])
    return str(exc)


def _report_error(args: argparse.Namespace, exc: BaseException) -> int:
    """Print a user error (as a JSON error object with --json) and return exit code 2."""
    message = _message(exc)
    if getattr(args, "json", False):
        body: dict = {"ok": False, "error": message, "error_type": type(exc).__name__}
        if isinstance(exc, OSError) and exc.errno is not None:
            body["errno"] = errno.errorcode.get(exc.errno, exc.errno)
        print(json.dumps(body))
    print(f"error: {message}", file=sys.stderr)
    return 2


def _run(args: argparse.Namespace) -> int:
    try:
        result = args.handler(args)
    except Cancelled as exc:
        print(f"cancelled: {exc}", file=sys.stderr)
        return 130
    except KeyboardInterrupt:
        print("interrupted: finished work was kept; rerun the same command to continue", file=sys.stderr)
        return 130
    except (AASError, ValueError, FileNotFoundError, FileExistsError) as exc:
        return _report_error(args, exc)
    except OSError as exc:
        # A write that escaped the fsutil helpers (a library's own writer): still one clear message, no traceback.
        from aas_core.fsutil import STORAGE_ERRNOS, storage_error

        if exc.errno in STORAGE_ERRNOS:
            where = Path(os.fsdecode(exc.filename)) if exc.filename else Path.cwd()
            return _report_error(args, storage_error(exc, where if where.is_dir() else where.parent))
        return _report_error(args, exc)
    if getattr(args, "json", False):
        result.pop("_text", None)
        print(json.dumps({"ok": True, **result}, default=str))
    else:
        _print_human(result)
    return 0
