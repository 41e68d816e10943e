"""The ``invlab`` command's frame: the parser assembled from the command groups (one module
each in :mod:`invlab.cli`), logging setup, and the one-line error handling (see
:mod:`invlab.cli`)."""

from __future__ import annotations

import argparse
import contextlib
import errno
import os
import signal
import sys
import threading
from collections.abc import Iterator, Sequence

from invlab._logging import configure_logging
from invlab._version import __version__
from invlab.allocator import keep_freed_memory
from invlab.cli.audit import add_audit_parser
from invlab.cli.catalog import add_catalog_parsers, add_metrics_parser
from invlab.cli.data import add_data_parser
from invlab.cli.measure import add_measure_parser, run_measure_checked
from invlab.cli.study import add_study_parsers
from invlab.cli.zoo import add_zoo_parser
from invlab.errors import InvlabError
from invlab.sweep import StudyError


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (a BaseException, so no cell swallows it)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: object) -> None:
        raise Terminated()

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def _error_types() -> tuple[type[BaseException], ...]:
    return (InvlabError, ValueError, OSError)  # InvlabError: every error invlab raises


def _message(e: BaseException) -> str:
    if isinstance(e, OSError) and not isinstance(e, FileNotFoundError):
        what = e.strerror or str(e)
        where = f": {e.filename}" if e.filename else ""
        hint = {errno.ENOSPC: " (free some space and rerun: finished cells are kept)",
                errno.EACCES: " (choose a writable --out)",
                errno.EROFS: " (choose a writable --out)"}.get(e.errno or 0, "")
        return f"{what}{where}{hint}"
    return str(e)



def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="invlab",
        description="Measure, train and study invariance in image classifiers.",
        epilog="Examples:\n  invlab data list\n  invlab study genuine --quick\n"
               "  invlab measure --checkpoint best.safetensors --data mnist:test --group r4\n"
               "  invlab transforms list\n"
               "  invlab audit --model my_model.py:build --data test.npz",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"invlab {__version__}")
    p.add_argument("--debug", action="store_true",
                   help="show tracebacks instead of one-line errors (or INVLAB_DEBUG=1)")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    add_data_parser(sub)
    add_catalog_parsers(sub)
    mp = add_measure_parser(sub)
    mp.add_argument("--allow-data-mismatch", action="store_true",
                    help="measure even if the data found differs from the checkpoint's "
                         "training data (reported in the output)")
    mp.set_defaults(func=run_measure_checked)
    add_metrics_parser(sub)
    add_zoo_parser(sub)
    add_audit_parser(sub)
    add_study_parsers(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    keep_freed_memory()  # ~10 % faster training on glibc (invlab.allocator); values unchanged
    # [invlab] lines on the process's stderr (the library itself installs no handler)
    configure_logging(stream=sys.__stderr__ or sys.stderr)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        # `invlab` or `invlab data` alone: show the relevant help.
        sub = {"data": "data_command", "models": "models_command", "groups": "groups_command",
               "transforms": "transforms_command",
               "zoo": "zoo_command"}
        if args.command in sub:
            try:
                parser.parse_args([args.command, "--help"])
            except SystemExit:  # argparse exits 0 after --help; a missing ACTION is a usage error
                pass
            return 2
        parser.print_help()
        return 0 if args.command is None else 2
    debug = bool(args.debug) or os.environ.get("INVLAB_DEBUG", "") not in ("", "0")

    try:
        with _sigterm_raises():
            return int(args.func(args) or 0)
    except _error_types() as e:
        # invlab's errors (DataError, CheckpointError, ConfigError, StoreError, OutputLocked,
        # StudyError, ...) carry a message meant for the user.
        if debug:
            raise
        print(f"invlab: error: {_message(e)}", file=sys.stderr)
        return 1 if isinstance(e, StudyError) else 2
    except Terminated:
        print("invlab: terminated (SIGTERM); finished cells are saved and the output folder is "
              "unlocked; rerun the same command to resume", file=sys.stderr)
        return 143
    except KeyboardInterrupt:
        print("invlab: interrupted; finished cells are saved, rerun the same command to resume",
              file=sys.stderr)
        return 130

