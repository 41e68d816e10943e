"""``invlab study NAME`` and ``invlab report DIR``."""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

from invlab.devices import add_device_argument, set_study_device
from invlab.studies.generalization import BUILTIN_SETS, check_test_sets
from invlab.studies.generalization import preset as generalization_preset
from invlab.studies.registry import build_report, get_study
from invlab.sweep import ConfigError, choose_executor


def _csv(s: str | None, flag: str = "a list") -> tuple[str, ...] | None:
    """``"a, b"`` → ``("a", "b")``; None when the flag is absent; a list that selects nothing
    (``--groups ""``) is an error, never the preset's default."""
    if s is None:
        return None
    items = tuple(x.strip() for x in s.split(",") if x.strip())
    if not items:
        raise ConfigError(None, f"{flag} {s!r} selects nothing; give a comma list or leave the flag out")
    return items


def _seeds(n: int | None) -> tuple[int, ...] | None:
    """``--seeds N`` → seeds ``0..N-1``; N < 1 selects nothing and is an error."""
    if n is None:
        return None
    if n < 1:
        raise ConfigError(None, f"--seeds {n} selects no seeds; give N >= 1 (runs seeds 0..N-1)")
    return tuple(range(n))


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
    p.add_argument("--n-train", type=int, default=None, metavar="N",
                   help="training images per model (default: the preset's)")
    p.add_argument("--n-val", type=int, default=None, metavar="N",
                   help="validation images (default: the preset's)")
    p.add_argument("--n-test", type=int, default=None, metavar="N",
                   help="at most N test images (default: the preset's)")
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
    add_device_argument(p, "the cells train and measure")


def _ckpt(args: argparse.Namespace) -> str:
    if args.checkpoints:
        return args.checkpoints
    name = _preset_name(args)
    return os.path.join("runs", "checkpoints" if name == "full" else f"checkpoints-{name}")


def executor_from_flags(args: argparse.Namespace) -> object:
    """The executor of a study command: :func:`invlab.sweep.choose_executor` of
    ``--executor``, ``--workers`` and ``--ray-address`` (the one place they are read)."""
    study_device_from_flags(args)
    return choose_executor(args.executor, args.workers, ray_address=args.ray_address)


def study_device_from_flags(args: argparse.Namespace) -> str:
    """``--device``: resolved (one-line error when absent, before any cell runs) and made the
    device of every cell (``$INVLAB_DEVICE``, inherited by workers; recorded per cell in the
    store's ``device`` column). Off the CPU, the per-cell thread counts (``--threads``) and
    the glibc allocator setting (:mod:`invlab.allocator`) still apply, to the CPU-side work
    only (data preparation, orbit indexing); this is said on stderr."""
    dev = set_study_device(getattr(args, "device", "auto"))
    if dev.type != "cpu":
        print(f"note: cells train and measure on {dev}; --threads and the allocator setting "
              "apply to CPU-side work only; results are not bit-identical to CPU runs (cell "
              "ids do not include the device: use a new --out to compare devices)",
              file=sys.stderr)
    return str(dev)


def _genuine_overrides(args: argparse.Namespace) -> dict[str, object]:
    """Flags that override the genuine preset (also the models of drift/spectral)."""
    return {"groups": _csv(args.groups, "--groups"), "epochs": args.epochs,
            "threads": args.threads, "seeds": _seeds(args.seeds),
            "n_train": getattr(args, "n_train", None), "n_val": getattr(args, "n_val", None),
            "n_test_max": getattr(args, "n_test", None)}


def _run(args: argparse.Namespace, study: str, **overrides: object) -> int:
    """Run ``study`` through the registry (:func:`invlab.run_study`: its cells, then its
    report) with the common flags, then print its tables and claims and where its outputs
    are."""
    s, name = get_study(study), _preset_name(args)
    t0 = time.perf_counter()
    out = s.run(name, args.out, checkpoints=_ckpt(args), workers=args.workers,
                executor=executor_from_flags(args), progress=not args.no_progress, **overrides)
    if name != "full" and s.reduced_note:
        print(f"(preset {name!r}: {s.reduced_note})")
    print(s.summary_text(out))
    print(f"wall time {(time.perf_counter() - t0) / 60:.1f} min; tables, figures and "
          f"summary.json in {out}/ (config.yaml holds the resolved config)")
    return 0


def _cmd_genuine(args: argparse.Namespace) -> int:
    return _run(args, "genuine", datasets=_csv(args.datasets, "--datasets"),
                **_genuine_overrides(args))


def _cmd_drift(args: argparse.Namespace) -> int:
    return _run(args, "drift", modes=(args.mode,) if args.mode else None,
                **_genuine_overrides(args))


def _cmd_spectral(args: argparse.Namespace) -> int:
    return _run(args, "spectral", **_genuine_overrides(args))


def _cmd_origins(args: argparse.Namespace) -> int:
    name = _preset_name(args)
    over: dict[str, object] = {"epochs": args.epochs, "threads": args.threads,
                               "archs": _csv(args.archs, "--archs"), "n_train": args.n_train,
                               "n_val": args.n_val, "n_test": args.n_test,
                               "seeds": _seeds(args.seeds)}
    if name == "imagenet" and (args.models is None or args.data is None):
        raise SystemExit("--preset imagenet profiles your own pretrained models on your ImageNet "
                         "validation images: pass --models zoo.py and --data PATH (a folder of "
                         "the JPEGs with labels.csv, or class sub-folders); see "
                         "docs/howto/natural-images.md")
    if name == "imagenet" and args.preprocess is None:
        args.preprocess = "resize=256,crop=224"  # the preset's evaluation transform
    if args.data and not args.data.endswith(".npz") and not os.path.exists(args.data):
        over["dataset"] = args.data
    if name == "quick" and not args.models and not args.data:
        print("(preset 'quick': MNIST, sized to fit the 5,000 images bundled with invlab; the "
              "full study (`--preset full`) uses Fashion-MNIST.)", flush=True)
    return _run(args, "origins", models_file=args.models,
                data=args.data if "dataset" not in over else None,
                preprocess=args.preprocess, **over)


def _kv(items: list[str] | None, own_models: bool = False) -> dict[str, str]:
    """``--test-set NAME=PATH`` values; names checked (built-in, ``|``, twice, ...). With your
    own models (``--models``) the built-in sets are not measured, so their names are free."""
    pairs = []
    for it in items or []:
        name, sep, path = it.partition("=")
        if not sep or not name or not path:
            raise ConfigError(None, f"--test-set expects NAME=PATH (a .npz or an image folder), got "
                              f"{it!r}")
        pairs.append((name, path))
    return check_test_sets(pairs, () if own_models and pairs else BUILTIN_SETS)


def _cmd_generalization(args: argparse.Namespace) -> int:
    name = _preset_name(args)
    if name == "cifar10" and (args.models is None or not args.test_set):
        raise SystemExit("--preset cifar10 studies your own zoo on your CIFAR-10 files: pass "
                         "--models zoo.py and --test-set cifar10=PATH/test_batch.bin (the first "
                         "is in-distribution) plus shifted sets, e.g. --test-set "
                         "fog=CIFAR-10-C/fog.npy; see docs/howto/natural-images.md")
    test_sets = _kv(args.test_set, own_models=args.models is not None)
    transforms = tuple(args.transform) if args.transform else None
    if name == "quick":
        p = generalization_preset(name, n_pool=args.n_pool, transforms=transforms, n_train=args.n_train,
                   n_eval=args.n_test)
        print(f"(preset 'quick': a {len(p.zoo)}-model zoo and {len(p.reference)} reference models "
              f"sized to fit the 5,000 MNIST images bundled with invlab: a "
              f"{p.settings.n_pool:,}-image training pool, the rest is the ID test split. A "
              "smoke run, not the paper's scale: the full preset needs the full MNIST files.)",
              flush=True)
    return _run(args, "generalization", n_pool=args.n_pool, transforms=transforms,
                n_train=args.n_train, n_eval=args.n_test, test_sets=test_sets,
                models_file=args.models, preprocess=args.preprocess)


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


def _add_m23_parsers(ssub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``invlab study genuine``, ``drift`` and ``spectral`` (Moskalev et al. 2023)."""
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


def _add_origins_parser(ssub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``invlab study origins`` (Bouchacourt et al. 2021)."""
    o = ssub.add_parser("origins", help="B21: where invariance comes from (data, augmentation, "
                        "architecture); profiles, ablation, factors of variation")
    _common(o, "runs/origins")
    o.add_argument("--models", default=None, metavar="FILE.py",
                   help="profile your own models: FILE.py defines models() yielding "
                        "(name, nn.Module, {'mean': [...], 'std': [...]})")
    o.add_argument("--data", default=None, metavar="NAME|PATH",
                   help="data source name (fashion-mnist, mnist) or an image folder / .npz")
    o.add_argument("--preprocess", default=None, metavar="SPEC",
                   help="for --data image files: e.g. resize=36,crop=32 (bilinear + antialias, "
                        "centre crop)")
    o.add_argument("--archs", default=None, help="comma list of registry models, e.g. "
                   "mlp5,cnn_small,vit_tiny")
    o.set_defaults(func=_cmd_origins)


def _add_generalization_parser(ssub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``invlab study generalization`` (Deng et al. 2022): its own flags, not ``_common``'s."""
    gz = ssub.add_parser("generalization",
                         help="D22: does invariance (EI) predict accuracy across a zoo and shifts?")
    gz.add_argument("--quick", action="store_true", help="small zoo: minutes on 2 CPU cores")
    gz.add_argument("--preset", default=None, help="preset of generalization.yaml (full, quick; cifar10: "
                    "your --models on your CIFAR-10 files, see docs/howto/natural-images.md)")
    gz.add_argument("--out", default="runs/generalization", help="output folder")
    gz.add_argument("--n-pool", type=int, default=None,
                    help="MNIST images the zoo and the reference models train on (default: "
                         "the preset's n_pool: full 10,000, quick 3,000, which fits the bundled "
                         "5k); the remaining MNIST images are the ID test split. It must be at "
                         "least the largest n_train of the preset's zoo and reference models")
    gz.add_argument("--n-train", type=int, default=None, metavar="N",
                    help="cap every zoo and reference model's training images at N")
    gz.add_argument("--n-test", type=int, default=None, metavar="N",
                    help="images per test set used for the measures (default: the preset's "
                         "n_eval)")
    gz.add_argument("--checkpoints", default=None, help="checkpoint cache (default runs/checkpoints)")
    add_executor_flags(gz)
    gz.add_argument("--no-progress", action="store_true")
    gz.add_argument("--test-set", action="append", metavar="NAME=PATH",
                    help="extra test set: a .npz (images, labels) or a folder with one "
                         "sub-folder per class; repeatable")
    gz.add_argument("--preprocess", default=None, metavar="SPEC",
                    help="for the --test-set images: e.g. resize=36,crop=32 or "
                         "resize=256,crop=224 (bilinear + antialias, centre crop)")
    gz.add_argument("--transform", action="append", metavar="SPEC",
                    help="extra EI transform spec, e.g. rotate:30, grayscale (colour inputs); "
                         "repeatable (replaces the preset's transforms)")
    gz.add_argument("--models", default=None, metavar="FILE.py",
                    help="study your own models: FILE.py defines models() yielding "
                         "(name, nn.Module, {'mean': [...], 'std': [...]})")
    gz.set_defaults(func=_cmd_generalization)


def add_study_parsers(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    """``invlab study NAME`` (one sub-command per study) and ``invlab report DIR``."""
    study = sub.add_parser("study", help="run a paper's study end to end (resumable)")
    ssub = study.add_subparsers(dest="study_command", metavar="STUDY")
    _add_m23_parsers(ssub)
    _add_origins_parser(ssub)
    _add_generalization_parser(ssub)
    r = sub.add_parser("report", help="rebuild every table and figure of DIR from its store")
    r.add_argument("dir")
    r.add_argument("--html", action="store_true",
                   help="also write DIR/report.html: one self-contained page (tables beside the "
                        "paper's numbers, figures, claims, config, provenance)")
    r.set_defaults(func=_cmd_report)
