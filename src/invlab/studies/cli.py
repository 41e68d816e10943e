"""``invlab study NAME`` and ``invlab report DIR``."""

from __future__ import annotations

import argparse
import os
import sys
import time


def _csv(s: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in s.split(",") if x.strip()) if s else None


def _common(p: argparse.ArgumentParser, default_out: str) -> None:
    p.add_argument("--quick", action="store_true", help="small preset: minutes on 2 CPU cores")
    p.add_argument("--out", default=default_out, help=f"output folder (default {default_out})")
    p.add_argument("--checkpoints", default=None,
                   help="shared checkpoint cache (default runs/checkpoints); studies reuse "
                        "models trained with identical configs")
    add_executor_flags(p)
    p.add_argument("--groups", default=None, help="comma list, e.g. r4,t3")
    p.add_argument("--seeds", type=int, default=None, help="number of seeds (0..N-1)")
    p.add_argument("--epochs", type=int, default=None, help="override max epochs")
    p.add_argument("--threads", type=int, default=None,
                   help="intra-op threads per cell and training run (default 1; part of every "
                        "cell id and checkpoint key, so results never depend on --workers)")
    p.add_argument("--no-progress", action="store_true")


def add_executor_flags(p: argparse.ArgumentParser) -> None:
    """``--workers``, ``--executor``, ``--ray-address``: every study command takes them and
    reads them with :func:`executor_from_flags`."""
    p.add_argument("--workers", type=int, default=1,
                   help="parallel cells: process-pool size, or CPUs of a local Ray instance "
                        "(default 1)")
    p.add_argument("--executor", choices=["serial", "process", "ray"], default=None,
                   help="where cells run (default: process when --workers > 1, else serial); "
                        "ray needs `pip install 'invlab[ray]'`")
    p.add_argument("--ray-address", default=None, metavar="ADDR",
                   help="with --executor ray: 'auto' joins the cluster started by `ray start`, "
                        "host:port or ray://host:10001 another one (default: start a local "
                        "instance with --workers CPUs). Multi-node: --out and --checkpoints on a "
                        "shared filesystem, INVLAB_DATA set on every node")


def _ckpt(args: argparse.Namespace) -> str:
    if args.checkpoints:
        return args.checkpoints
    return os.path.join("runs", "checkpoints-quick" if args.quick else "checkpoints")


def executor_from_flags(args: argparse.Namespace) -> object:
    """The executor of a study command: :func:`invlab.sweep.choose_executor` of
    ``--executor``, ``--workers`` and ``--ray-address`` (the one place they are read)."""
    from invlab.sweep import choose_executor

    return choose_executor(args.executor, args.workers, ray_address=args.ray_address)


def _genuine_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Flags that override the genuine preset (also the models of drift/spectral)."""
    return {"groups": _csv(args.groups), "epochs": args.epochs, "threads": args.threads,
            "seeds": tuple(range(args.seeds)) if args.seeds else None}


def _done(text: str, out: object, t0: float) -> int:
    """Print a study's tables and where its outputs are."""
    print(text)
    print(f"wall time {(time.perf_counter() - t0) / 60:.1f} min; tables, figures and "
          f"summary.json in {out}/ (config.yaml holds the resolved config)")
    return 0


def _cmd_genuine(args: argparse.Namespace) -> int:
    from invlab.report.genuine import print_table
    from invlab.studies.genuine import preset, run_genuine

    name = "quick" if args.quick else "full"
    p = preset(name, datasets=_csv(args.datasets), **_genuine_overrides(args))
    t0 = time.perf_counter()
    out = run_genuine(p, args.out, _ckpt(args), workers=args.workers,
                      progress=not args.no_progress, preset_name=name,
                      executor=executor_from_flags(args))
    return _done(print_table(out), out, t0)


def _cmd_drift(args: argparse.Namespace) -> int:
    from invlab.report.drift import print_tables
    from invlab.studies.drift import preset, run_drift

    name = "quick" if args.quick else "full"
    p = preset(name, modes=(args.mode,) if args.mode else None)
    t0 = time.perf_counter()
    out = run_drift(p, args.out, _ckpt(args), args.workers, not args.no_progress, name,
                    _genuine_overrides(args), executor=executor_from_flags(args))
    return _done(print_tables(out), out, t0)


def _cmd_spectral(args: argparse.Namespace) -> int:
    from invlab.report.spectral import print_table
    from invlab.studies.spectral import preset, run_spectral

    name = "quick" if args.quick else "full"
    t0 = time.perf_counter()
    out = run_spectral(preset(name), args.out, _ckpt(args), args.workers,
                       not args.no_progress, name, _genuine_overrides(args),
                       executor=executor_from_flags(args))
    return _done(print_table(out), out, t0)


def _cmd_report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from invlab.report import build_report

    if args.html and Path(args.dir).is_dir() and not (Path(args.dir) / "store.sqlite").exists():
        # e.g. committed results: the page renders from the tables and figures already there
        print(f"note: no results store in {args.dir}; rendering the page from its files only",
              file=sys.stderr)
    else:
        for p in build_report(args.dir):
            print(p)
    if args.html:
        from invlab.report.html import write_html_report

        print(write_html_report(args.dir))
    return 0


def add_study_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    study = sub.add_parser("study", help="run a paper's study end to end (resumable)")
    ssub = study.add_subparsers(dest="study_command", metavar="STUDY")
    g = ssub.add_parser("genuine", help="M23 Table 1, Figs. 2-3: DA vs WT vs IR")
    _common(g, "runs/genuine")
    g.add_argument("--datasets", default=None, help="comma list: mnist,fashion-mnist")
    g.set_defaults(func=_cmd_genuine)
    d = ssub.add_parser("drift", help="M23 Fig. 4: invariance under MNIST→FMNIST drift")
    _common(d, "runs/drift")
    d.add_argument("--mode", choices=["blend", "mixture"], default=None,
                   help="drift reading (default: both)")
    d.set_defaults(func=_cmd_drift)
    s = ssub.add_parser("spectral", help="M23 Fig. 5: sigma_max of the input Jacobian")
    _common(s, "runs/spectral")
    s.set_defaults(func=_cmd_spectral)
    r = sub.add_parser("report", help="rebuild every table and figure of DIR from its store")
    r.add_argument("dir")
    r.add_argument("--html", action="store_true",
                   help="also write DIR/report.html: one self-contained page (tables beside the "
                        "paper's numbers, figures, claims, config, provenance)")
    r.set_defaults(func=_cmd_report)
