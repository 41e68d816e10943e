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
    p.add_argument("--preset", default=None,
                   help="preset name in the study's YAML (full, quick, demo; default full, or "
                        "quick with --quick)")
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


def _preset_name(args: argparse.Namespace) -> str:
    return args.preset or ("quick" if args.quick else "full")


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
    from invlab.devices import add_device_argument

    add_device_argument(p, "the cells train and measure")


def _ckpt(args: argparse.Namespace) -> str:
    if args.checkpoints:
        return args.checkpoints
    name = _preset_name(args)
    return os.path.join("runs", "checkpoints" if name == "full" else f"checkpoints-{name}")


def executor_from_flags(args: argparse.Namespace) -> object:
    """The executor of a study command: :func:`invlab.sweep.choose_executor` of
    ``--executor``, ``--workers`` and ``--ray-address`` (the one place they are read)."""
    from invlab.sweep import choose_executor

    study_device_from_flags(args)
    return choose_executor(args.executor, args.workers, ray_address=args.ray_address)


def study_device_from_flags(args: argparse.Namespace) -> str:
    """``--device``: resolved (one-line error when absent, before any cell runs) and made the
    device of every cell (``$INVLAB_DEVICE``, inherited by workers; recorded per cell in the
    store's ``device`` column). Off the CPU, the per-cell thread counts (``--threads``) and
    the glibc allocator setting (:mod:`invlab.allocator`) still apply, to the CPU-side work
    only (data preparation, orbit indexing); this is said on stderr."""
    from invlab.devices import set_study_device

    dev = set_study_device(getattr(args, "device", "auto"))
    if dev.type != "cpu":
        print(f"note: cells train and measure on {dev}; --threads and the allocator setting "
              "apply to CPU-side work only; results are not bit-identical to CPU runs (cell "
              "ids do not include the device: use a new --out to compare devices)",
              file=sys.stderr)
    return str(dev)


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

    name = _preset_name(args)
    p = preset(name, datasets=_csv(args.datasets), **_genuine_overrides(args))
    t0 = time.perf_counter()
    out = run_genuine(p, args.out, _ckpt(args), workers=args.workers,
                      progress=not args.no_progress, preset_name=name,
                      executor=executor_from_flags(args))
    if name != "full":
        print(f"(preset {name!r}: a reduced run. The paper's full study is "
              "`invlab study genuine --out results/genuine`: 2 datasets x 2 groups x 4 seeds, "
              "300 epochs, nu tuned per dataset and group.)")
    return _done(print_table(out), out, t0)


def _cmd_drift(args: argparse.Namespace) -> int:
    from invlab.report.drift import print_tables
    from invlab.studies.drift import preset, run_drift

    name = _preset_name(args)
    p = preset(name, modes=(args.mode,) if args.mode else None)
    t0 = time.perf_counter()
    out = run_drift(p, args.out, _ckpt(args), args.workers, not args.no_progress, name,
                    _genuine_overrides(args), executor=executor_from_flags(args))
    return _done(print_tables(out), out, t0)


def _cmd_spectral(args: argparse.Namespace) -> int:
    from invlab.report.spectral import print_table
    from invlab.studies.spectral import preset, run_spectral

    name = _preset_name(args)
    t0 = time.perf_counter()
    out = run_spectral(preset(name), args.out, _ckpt(args), args.workers,
                       not args.no_progress, name, _genuine_overrides(args),
                       executor=executor_from_flags(args))
    return _done(print_table(out), out, t0)


def _cmd_origins(args: argparse.Namespace) -> int:
    from invlab.report.origins import print_table
    from invlab.studies.origins import preset, run_origins

    name = _preset_name(args)
    over: dict[str, object] = {"epochs": args.epochs, "threads": args.threads,
                               "archs": _csv(args.archs),
                               "seeds": tuple(range(args.seeds)) if args.seeds else None}
    if args.data and not args.data.endswith(".npz") and not os.path.exists(args.data):
        over["dataset"] = args.data
    t0 = time.perf_counter()
    out = run_origins(preset(name, **over), args.out, _ckpt(args), args.workers,
                      not args.no_progress, name, models_file=args.models,
                      data=args.data if "dataset" not in over else None,
                      executor=executor_from_flags(args))
    return _done(print_table(out), out, t0)


def _kv(items: list[str] | None, own_models: bool = False) -> dict[str, str]:
    """``--test-set NAME=PATH`` values; names checked (built-in, ``|``, twice, ...). With your
    own models (``--models``) the built-in sets are not measured, so their names are free."""
    from invlab.studies.generalization import BUILTIN_SETS, check_test_sets

    pairs = []
    for it in items or []:
        name, sep, path = it.partition("=")
        if not sep or not name or not path:
            raise SystemExit(f"--test-set expects NAME=PATH (a .npz or an image folder), got {it!r}")
        pairs.append((name, path))
    return check_test_sets(pairs, () if own_models and pairs else BUILTIN_SETS)


def _cmd_generalization(args: argparse.Namespace) -> int:
    from invlab.report.generalization import print_table
    from invlab.studies.generalization import preset, run_generalization

    name = _preset_name(args)
    test_sets = _kv(args.test_set, own_models=args.models is not None)
    transforms = tuple(args.transform) if args.transform else None
    t0 = time.perf_counter()
    out = run_generalization(preset(name, n_pool=args.n_pool, transforms=transforms), args.out,
                             _ckpt(args), args.workers, not args.no_progress, name, test_sets,
                             args.models, executor=executor_from_flags(args))
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
    g.add_argument("--datasets", default=None,
                   help="comma list of sources (mnist,fashion-mnist) or paths to your own "
                        "grayscale images (.npz or an image folder)")
    g.set_defaults(func=_cmd_genuine)
    d = ssub.add_parser("drift", help="M23 Fig. 4: invariance under MNIST→FMNIST drift")
    _common(d, "runs/drift")
    d.add_argument("--mode", choices=["blend", "mixture"], default=None,
                   help="drift reading (default: both)")
    d.set_defaults(func=_cmd_drift)
    s = ssub.add_parser("spectral", help="M23 Fig. 5: sigma_max of the input Jacobian")
    _common(s, "runs/spectral")
    s.set_defaults(func=_cmd_spectral)
    o = ssub.add_parser("origins", help="B21: where invariance comes from (data, augmentation, "
                        "architecture); profiles, ablation, factors of variation")
    _common(o, "runs/origins")
    o.add_argument("--models", default=None, metavar="FILE.py",
                   help="profile your own models: FILE.py defines models() yielding "
                        "(name, nn.Module, {'mean': [...], 'std': [...]})")
    o.add_argument("--data", default=None, metavar="NAME|PATH",
                   help="data source name (fashion-mnist, mnist) or an image folder / .npz")
    o.add_argument("--archs", default=None, help="comma list of registry models, e.g. "
                   "mlp5,cnn_small,vit_tiny")
    o.set_defaults(func=_cmd_origins)
    gz = ssub.add_parser("generalization",
                         help="D22: does invariance (EI) predict accuracy across a zoo and shifts?")
    gz.add_argument("--quick", action="store_true", help="small zoo: minutes on 2 CPU cores")
    gz.add_argument("--preset", default=None, help="preset of generalization.yaml (full, quick)")
    gz.add_argument("--out", default="runs/generalization", help="output folder")
    gz.add_argument("--n-pool", type=int, default=None,
                    help="MNIST training pool (default: the preset's 10,000; the rest is the ID "
                         "test split, so a clone with only the bundled 5k needs e.g. 3000)")
    gz.add_argument("--checkpoints", default=None, help="checkpoint cache (default runs/checkpoints)")
    add_executor_flags(gz)
    gz.add_argument("--no-progress", action="store_true")
    gz.add_argument("--test-set", action="append", metavar="NAME=PATH",
                    help="extra test set: a .npz (images, labels) or a folder with one "
                         "sub-folder per class; repeatable")
    gz.add_argument("--transform", action="append", metavar="SPEC",
                    help="extra EI transform spec, e.g. rotate:30, grayscale (colour inputs); "
                         "repeatable (replaces the preset's transforms)")
    gz.add_argument("--models", default=None, metavar="FILE.py",
                    help="study your own models: FILE.py defines models() yielding "
                         "(name, nn.Module, {'mean': [...], 'std': [...]})")
    gz.set_defaults(func=_cmd_generalization)
    r = sub.add_parser("report", help="rebuild every table and figure of DIR from its store")
    r.add_argument("dir")
    r.add_argument("--html", action="store_true",
                   help="also write DIR/report.html: one self-contained page (tables beside the "
                        "paper's numbers, figures, claims, config, provenance)")
    r.set_defaults(func=_cmd_report)
