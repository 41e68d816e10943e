"""``invlab study NAME`` and ``invlab report DIR``.

One sub-command per registered study (:func:`invlab.studies.list_studies`): its flags and
how they become :meth:`~invlab.studies.Study.run` keywords are the study's own
(``Study.arguments``/``Study.keywords``, :mod:`invlab.studies.flags`), so this module holds
no per-study code.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from invlab.studies.flags import (
    add_executor_flags,
    checkpoints_folder,
    executor_from_flags,
    preset_name,
    study_device_from_flags,
)
from invlab.studies.registry import build_report, get_study, list_studies

# the executor/device flags live with the studies' flags; importable from here as before
__all__ = ["add_executor_flags", "add_study_parsers", "executor_from_flags",
           "study_device_from_flags"]


def _run(args: argparse.Namespace) -> int:
    """Run the study ``invlab study NAME`` names through the registry (:meth:`Study.run`: its
    cells, then its report) with its flags' keywords and the run flags, then print its tables
    and claims and where its outputs are."""
    s = get_study(args.study_command)
    keywords = s.run_keywords(args)  # the study's own checks and notes come first
    name = preset_name(args)
    t0 = time.perf_counter()
    out = s.run(name, args.out, checkpoints=checkpoints_folder(args), workers=args.workers,
                executor=executor_from_flags(args), progress=not args.no_progress, **keywords)
    if name != "full" and s.reduced_note:
        print(f"(preset {name!r}: {s.reduced_note})")
    print(s.summary_text(out))
    print(f"wall time {(time.perf_counter() - t0) / 60:.1f} min; tables, figures and "
          f"summary.json in {out}/ (config.yaml holds the resolved config)")
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    """``invlab report DIR [--html]``: :func:`invlab.build_report` (the paths it wrote, one a
    line); with ``--html`` in a folder without a store, redraw what its files hold instead."""
    if args.html and Path(args.dir).is_dir() and not (Path(args.dir) / "store.sqlite").exists():
        # e.g. committed results: the page renders from the tables and figures already there
        from invlab.report import redraw_from_files  # lazy: startup (invlab.report imports pandas)
        from invlab.report.html import write_html_report  # lazy: startup, as above

        print(f"note: no results store in {args.dir}; redrawing what its files hold and "
              "rendering the page from them", file=sys.stderr)
        written, notes = redraw_from_files(args.dir)
        for p in written:
            print(p)
        for n in notes:
            print(f"note: {n}", file=sys.stderr)
        print(write_html_report(args.dir))
        return 0
    for p in build_report(args.dir, html=args.html):
        print(p)
    return 0


def add_study_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``invlab study NAME`` (one sub-command per registered study, its flags its own) and
    ``invlab report DIR``."""
    study = sub.add_parser("study", help="run a paper's study end to end (resumable)")
    ssub = study.add_subparsers(dest="study_command", metavar="STUDY")
    for s in list_studies():  # in registration order
        p = ssub.add_parser(s.name, help=s.description)
        s.add_arguments(p)
        p.set_defaults(func=_run)
    r = sub.add_parser("report", help="rebuild every table and figure of DIR from its store")
    r.add_argument("dir")
    r.add_argument("--html", action="store_true",
                   help="also write DIR/report.html: one self-contained page (tables beside the "
                        "paper's numbers, figures, claims, config, provenance)")
    r.set_defaults(func=_cmd_report)
