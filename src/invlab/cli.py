"""The ``invlab`` command line: thin — parses, calls the library, prints.

Errors: invlab's own error types (bad data, checkpoint, config, store, a locked output
folder, failed cells) and OS errors (read-only folder, full disk) end the command with one
line ``invlab: error: <message>`` and exit status 2 (1 when study cells failed); ``--debug``
or ``INVLAB_DEBUG=1`` shows the traceback instead. SIGTERM stops a study cleanly (finished
cells stay in the store, the output lock is released) with a message and status 143.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import json
import os
import signal
import sys
from collections.abc import Iterator, Sequence


def _table(rows: list[dict[str, str]], cols: Sequence[str]) -> str:
    widths = {c: max(len(c), *(len(str(r.get(c, ""))) for r in rows)) for c in cols}
    line = "  ".join(c.ljust(widths[c]) for c in cols)
    out = [line, "  ".join("-" * widths[c] for c in cols)]
    out += ["  ".join(str(r.get(c, "")).ljust(widths[c]) for c in cols) for r in rows]
    return "\n".join(s.rstrip() for s in out)


def _cmd_data_list(args: argparse.Namespace) -> int:
    from invlab.data import describe_sources

    rows = describe_sources()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows, ["name", "images", "where"]))
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    from invlab.data import fetch

    print(f"downloaded to {fetch(args.name)}")
    return 0


def _cmd_models_list(args: argparse.Namespace) -> int:
    from invlab.models import create_model, list_models

    rows = []
    for name, desc in list_models().items():
        n = sum(p.numel() for p in create_model(name).parameters())
        rows.append({"name": name, "params (36x36, 9 classes)": f"{n:,}", "description": desc})
    print(_table(rows, ["name", "params (36x36, 9 classes)", "description"]))
    return 0


def _cmd_groups_list(args: argparse.Namespace) -> int:
    from invlab.groups import create_group, list_groups

    rows = []
    for name, desc in list_groups().items():
        g = create_group("t3" if name == "t<n>" else name)
        rows.append({"name": name, "order": "n" if name == "t<n>" else str(g.order),
                     "exact": str(g.is_exact), "description": desc})
    print(_table(rows, ["name", "order", "exact", "description"]))
    return 0


def _cmd_transforms_list(args: argparse.Namespace) -> int:
    from invlab.transforms import transform_rows

    h, _, w = args.size.lower().partition("x")
    try:
        height, width = int(h), int(w or h)
    except ValueError:
        raise ValueError(f"--size must be H or HxW (e.g. 36 or 28x28), found {args.size!r}") \
            from None
    rows = transform_rows(height, width)
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    yes = {True: "yes", False: "-"}
    for r in rows:
        r.update({k: yes[r[k]] for k in ("exact", "invertible", "group")})
    print(_table(rows, ["name", "kind", "unit", "exact", "invertible", "group", "magnitudes"]))
    print(f"\nmagnitudes: the family grid in ascending order (B21's 10 per family); translate in "
          f"pixels on a {height}x{width} canvas.\nspecs: a name alone is the whole family "
          "('rotate'), name:m one transform ('rotate:30', 'translate_x:4', 'translate_x:0.5W',"
          " 'noise:0.1@seed=3').\ninvertible: has an inverse (geometric ones with a validity "
          "mask); fixed brightness_down:f / contrast_down:f with f > 0 are invertible too.")
    return 0


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM (a BaseException, so no cell swallows it)."""


@contextlib.contextmanager
def _sigterm_raises() -> Iterator[None]:
    import threading

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
    from invlab.errors import InvlabError

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


def _measure_with_data_check(args: argparse.Namespace) -> int:
    """``invlab measure`` with the data-fingerprint check: refuse a checkpoint measured on
    other data than it was trained on unless ``--allow-data-mismatch``; then say so in the
    header (table) or a ``data_check`` field (JSON)."""
    import io
    from contextlib import redirect_stdout

    from invlab.data import data_mismatch_allowed, last_data_check
    from invlab.metrics.cli import run_measure

    buf = io.StringIO()
    with data_mismatch_allowed(bool(args.allow_data_mismatch)), redirect_stdout(buf):
        code = run_measure(args)
        check = last_data_check()
    text = buf.getvalue()
    if code == 0 and check is not None:
        if args.json:
            doc = json.loads(text)
            doc["data_check"] = check
            text = json.dumps(doc, indent=2) + "\n"
        elif check["mismatch"]:
            t, f = check["trained_on"], check["measured_on"]
            text = (f"WARNING: DATA MISMATCH (--allow-data-mismatch): trained on {t['images']:,} "
                    f"{t['source']} images ({t['hash']}), measured on {f['images']:,} "
                    f"({f['hash']}); splits differ from training\n") + text
        elif check.get("external"):
            e = check["external"]
            text = (f"note: your own images ({e['path']}, {e['images']:,} images"
                    + (f", {e['dropped']:,} of the class the checkpoint was trained without "
                       "dropped" if e["dropped"] else "")
                    + "); not checked against the checkpoint's training data\n") + text
        elif not check["verified"]:
            text = "note: the checkpoint records no data fingerprint; data not verified\n" + text
    sys.stdout.write(text)
    return code


def build_parser() -> argparse.ArgumentParser:
    from invlab import __version__

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

    data = sub.add_parser("data", help="data sources: list, fetch")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    dl = dsub.add_parser("list", help="each source, where it was found, and its size")
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=_cmd_data_list)
    from invlab.data.sources import MIRRORS

    fetchable = ", ".join(MIRRORS)
    df = dsub.add_parser("fetch", help=f"download a source into the user cache (needs internet;"
                         f" fetchable: {fetchable})",
                         description=f"Download a data source's IDX files (checksums verified) "
                         f"into the user cache. Fetchable sources: {fetchable}. Without "
                         "internet, put the IDX files in $INVLAB_DATA/NAME/ instead.")
    df.add_argument("name", metavar="NAME",
                    help=f"the source to download, one of: {fetchable}")
    df.set_defaults(func=_cmd_data_fetch)

    models = sub.add_parser("models", help="registered models")
    models.add_subparsers(dest="models_command", metavar="ACTION").add_parser(
        "list", help="list models").set_defaults(func=_cmd_models_list)
    groups = sub.add_parser("groups", help="transformation groups")
    groups.add_subparsers(dest="groups_command", metavar="ACTION").add_parser(
        "list", help="list groups").set_defaults(func=_cmd_groups_list)
    transforms = sub.add_parser("transforms", help="transformations: groups, families, fixed")
    tl = transforms.add_subparsers(dest="transforms_command", metavar="ACTION").add_parser(
        "list", help="each transform, its magnitudes and exact / invertible / group flags")
    tl.add_argument("--size", default="36", help="canvas H or HxW for pixel magnitudes "
                    "(default 36)")
    tl.add_argument("--json", action="store_true")
    tl.set_defaults(func=_cmd_transforms_list)

    try:
        from invlab.metrics.cli import add_measure_parser
        mp = add_measure_parser(sub)
        mp.add_argument("--allow-data-mismatch", action="store_true",
                        help="measure even if the data found differs from the checkpoint's "
                             "training data (reported in the output)")
        mp.set_defaults(func=_measure_with_data_check)
        from invlab.metrics.cli import add_metrics_parser
        add_metrics_parser(sub)
    except ImportError:  # pragma: no cover - engine not built
        pass
    from invlab.zoo.cli import add_zoo_parser
    add_zoo_parser(sub)
    from invlab.audit import add_audit_parser

    add_audit_parser(sub)
    try:
        from invlab.studies.cli import add_study_parsers
        add_study_parsers(sub)
    except ImportError:  # pragma: no cover
        pass
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from invlab._logging import configure_logging
    from invlab.allocator import keep_freed_memory

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
    from invlab.sweep import StudyError

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


if __name__ == "__main__":
    sys.exit(main())
