"""The command-line flags of every study, and how they become :meth:`Study.run` keywords.

Each :class:`~invlab.studies.registry.Study` names two functions (``"module:function"``):

- ``arguments(parser, study)`` adds the study's flags to its ``invlab study NAME``
  sub-parser; the default, :func:`common_arguments`, adds the flags every study takes
  (:func:`add_common`: ``--quick``, ``--preset``, ``--out``, ``--checkpoints``, the executor
  and device flags, ``--groups``, ``--seeds``, ``--epochs``, ``--n-train``, ``--n-val``,
  ``--n-test``, ``--threads``, ``--no-progress``);
- ``keywords(args)`` returns the keyword arguments of :meth:`Study.run` that the parsed
  flags give, after the study's own checks and notes (one-line errors, before anything
  runs); the default, :func:`common_keywords`, returns the preset fields of the common
  flags.

``invlab study NAME`` (:mod:`invlab.cli.study`) reads the flags every study must have
itself: ``--quick``/``--preset`` (:func:`preset_name`), ``--out``, ``--checkpoints``
(:func:`checkpoints_folder`), ``--workers``/``--executor``/``--ray-address``/``--device``
(:func:`executor_from_flags`) and ``--no-progress``; :func:`add_common` adds them all. So a
sixth study whose preset takes the common fields needs neither function.

Only argparse-level code: the study modules (torch, data) are imported on use.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING, Any

from invlab.devices import add_device_argument, set_study_device
from invlab.sweep import ConfigError, choose_executor

if TYPE_CHECKING:
    from invlab.studies.registry import Study

__all__ = ["add_common", "add_executor_flags", "checkpoints_folder", "common_arguments",
           "common_keywords", "csv_list", "drift_arguments", "drift_keywords",
           "executor_from_flags", "generalization_arguments", "generalization_keywords",
           "genuine_arguments", "genuine_keywords", "origins_arguments", "origins_keywords",
           "parse_test_sets", "preset_name", "seeds", "study_device_from_flags"]


# ------------------------------------------------------------------- shared helpers


def csv_list(s: str | None, flag: str = "a list") -> tuple[str, ...] | None:
    """``"a, b"`` → ``("a", "b")``; None when the flag is absent; a list that selects nothing
    (``--groups ""``) is an error, never the preset's default."""
    if s is None:
        return None
    items = tuple(x.strip() for x in s.split(",") if x.strip())
    if not items:
        raise ConfigError(None, f"{flag} {s!r} selects nothing; give a comma list or leave the flag out")
    return items


def seeds(n: int | None) -> tuple[int, ...] | None:
    """``--seeds N`` → seeds ``0..N-1``; N < 1 selects nothing and is an error."""
    if n is None:
        return None
    if n < 1:
        raise ConfigError(None, f"--seeds {n} selects no seeds; give N >= 1 (runs seeds 0..N-1)")
    return tuple(range(n))


def preset_name(args: argparse.Namespace) -> str:
    """``--preset``, else ``quick`` with ``--quick``, else ``full``."""
    return args.preset or ("quick" if args.quick else "full")


def checkpoints_folder(args: argparse.Namespace) -> str:
    """``--checkpoints``, else ``runs/checkpoints`` (``full``) or ``runs/checkpoints-<preset>``."""
    if args.checkpoints:
        return str(args.checkpoints)
    name = preset_name(args)
    return os.path.join("runs", "checkpoints" if name == "full" else f"checkpoints-{name}")


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


def add_common(p: argparse.ArgumentParser, default_out: str) -> None:
    """The flags every study takes (see the module docstring); ``--out`` defaults to
    ``default_out``."""
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


def common_arguments(parser: argparse.ArgumentParser, study: Study) -> None:
    """The default ``Study.arguments``: :func:`add_common` with ``--out runs/<name>``."""
    add_common(parser, f"runs/{study.name}")


def common_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The default ``Study.keywords``: the preset fields of the common flags (None = the
    preset's value). Also the genuine models of drift and spectral."""
    return {"groups": csv_list(args.groups, "--groups"), "epochs": args.epochs,
            "threads": args.threads, "seeds": seeds(args.seeds),
            "n_train": getattr(args, "n_train", None), "n_val": getattr(args, "n_val", None),
            "n_test_max": getattr(args, "n_test", None)}


# ------------------------------------------------------ genuine, drift (Moskalev 2023)


def genuine_arguments(parser: argparse.ArgumentParser, study: Study) -> None:
    """``invlab study genuine``: the common flags and ``--datasets``."""
    common_arguments(parser, study)
    parser.add_argument("--datasets", default=None,
                        help="comma list of sources (mnist,fashion-mnist) or paths to your own "
                             "grayscale images (.npz or an image folder)")


def genuine_keywords(args: argparse.Namespace) -> dict[str, Any]:
    return {"datasets": csv_list(args.datasets, "--datasets"), **common_keywords(args)}


def drift_arguments(parser: argparse.ArgumentParser, study: Study) -> None:
    """``invlab study drift``: the common flags and ``--mode``."""
    common_arguments(parser, study)
    parser.add_argument("--mode", choices=["blend", "mixture"], default=None,
                        help="drift reading (default: both)")


def drift_keywords(args: argparse.Namespace) -> dict[str, Any]:
    return {"modes": (args.mode,) if args.mode else None, **common_keywords(args)}


# ------------------------------------------------------------- origins (Bouchacourt 2021)


def origins_arguments(parser: argparse.ArgumentParser, study: Study) -> None:
    """``invlab study origins``: the common flags, your own models and data, ``--archs``."""
    common_arguments(parser, study)
    parser.add_argument("--models", default=None, metavar="FILE.py",
                        help="profile your own models: FILE.py defines models() yielding "
                             "(name, nn.Module, {'mean': [...], 'std': [...]})")
    parser.add_argument("--data", default=None, metavar="NAME|PATH",
                        help="data source name (fashion-mnist, mnist) or an image folder / .npz")
    parser.add_argument("--preprocess", default=None, metavar="SPEC",
                        help="for --data image files: e.g. resize=36,crop=32 (bilinear + "
                             "antialias, centre crop)")
    parser.add_argument("--archs", default=None, help="comma list of registry models, e.g. "
                        "mlp5,cnn_small,vit_tiny")


def origins_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The origins run: ``--preset imagenet`` needs ``--models`` and ``--data`` (and resizes
    to 224 by default); ``--data`` that is no file is a data source name (``dataset``); the
    quick preset says what it runs on."""
    name = preset_name(args)
    over: dict[str, Any] = {"epochs": args.epochs, "threads": args.threads,
                            "archs": csv_list(args.archs, "--archs"), "n_train": args.n_train,
                            "n_val": args.n_val, "n_test": args.n_test,
                            "seeds": seeds(args.seeds)}
    if name == "imagenet" and (args.models is None or args.data is None):
        raise SystemExit("--preset imagenet profiles your own pretrained models on your ImageNet "
                         "validation images: pass --models zoo.py and --data PATH (a folder of "
                         "the JPEGs with labels.csv, or class sub-folders); see "
                         "docs/howto/natural-images.md")
    preprocess = args.preprocess
    if name == "imagenet" and preprocess is None:
        preprocess = "resize=256,crop=224"  # the preset's evaluation transform
    if args.data and not args.data.endswith(".npz") and not os.path.exists(args.data):
        over["dataset"] = args.data
    if name == "quick" and not args.models and not args.data:
        print("(preset 'quick': MNIST, sized to fit the 5,000 images bundled with invlab; the "
              "full study (`--preset full`) uses Fashion-MNIST.)", flush=True)
    return {"models_file": args.models, "data": args.data if "dataset" not in over else None,
            "preprocess": preprocess, **over}


# --------------------------------------------------------- generalization (Deng 2022)


def generalization_arguments(parser: argparse.ArgumentParser, study: Study) -> None:
    """``invlab study generalization``: its own flags, not :func:`add_common`'s."""
    parser.add_argument("--quick", action="store_true", help="small zoo: minutes on 2 CPU cores")
    parser.add_argument("--preset", default=None, help="preset of generalization.yaml (full, quick; cifar10: "
                        "your --models on your CIFAR-10 files, see docs/howto/natural-images.md)")
    parser.add_argument("--out", default=f"runs/{study.name}", help="output folder")
    parser.add_argument("--n-pool", type=int, default=None,
                        help="MNIST images the zoo and the reference models train on (default: "
                             "the preset's n_pool: full 10,000, quick 3,000, which fits the bundled "
                             "5k); the remaining MNIST images are the ID test split. It must be at "
                             "least the largest n_train of the preset's zoo and reference models")
    parser.add_argument("--n-train", type=int, default=None, metavar="N",
                        help="cap every zoo and reference model's training images at N")
    parser.add_argument("--n-test", type=int, default=None, metavar="N",
                        help="images per test set used for the measures (default: the preset's "
                             "n_eval)")
    parser.add_argument("--checkpoints", default=None, help="checkpoint cache (default runs/checkpoints)")
    add_executor_flags(parser)
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--test-set", action="append", metavar="NAME=PATH",
                        help="extra test set: a .npz (images, labels) or a folder with one "
                             "sub-folder per class; repeatable")
    parser.add_argument("--preprocess", default=None, metavar="SPEC",
                        help="for the --test-set images: e.g. resize=36,crop=32 or "
                             "resize=256,crop=224 (bilinear + antialias, centre crop)")
    parser.add_argument("--transform", action="append", metavar="SPEC",
                        help="extra EI transform spec, e.g. rotate:30, grayscale (colour inputs); "
                             "repeatable (replaces the preset's transforms)")
    parser.add_argument("--models", default=None, metavar="FILE.py",
                        help="study your own models: FILE.py defines models() yielding "
                             "(name, nn.Module, {'mean': [...], 'std': [...]})")


def parse_test_sets(items: list[str] | None, own_models: bool = False) -> dict[str, str]:
    """``--test-set NAME=PATH`` values; names checked (built-in, ``|``, twice, ...). With your
    own models (``--models``) the built-in sets are not measured, so their names are free."""
    from invlab.studies.generalization import BUILTIN_SETS, check_test_sets  # lazy: startup (the study
    # module and its data sources load when the study runs, not with `invlab --help`)

    pairs = []
    for it in items or []:
        name, sep, path = it.partition("=")
        if not sep or not name or not path:
            raise ConfigError(None, f"--test-set expects NAME=PATH (a .npz or an image folder), got "
                              f"{it!r}")
        pairs.append((name, path))
    return check_test_sets(pairs, () if own_models and pairs else BUILTIN_SETS)


def generalization_keywords(args: argparse.Namespace) -> dict[str, Any]:
    """The generalization run: ``--preset cifar10`` needs ``--models`` and ``--test-set``;
    the test sets are checked; the quick preset says what it runs."""
    from invlab.studies.generalization import preset as generalization_preset  # lazy: startup, as above

    name = preset_name(args)
    if name == "cifar10" and (args.models is None or not args.test_set):
        raise SystemExit("--preset cifar10 studies your own zoo on your CIFAR-10 files: pass "
                         "--models zoo.py and --test-set cifar10=PATH/test_batch.bin (the first "
                         "is in-distribution) plus shifted sets, e.g. --test-set "
                         "fog=CIFAR-10-C/fog.npy; see docs/howto/natural-images.md")
    test_sets = parse_test_sets(args.test_set, own_models=args.models is not None)
    transforms = tuple(args.transform) if args.transform else None
    if name == "quick":
        p = generalization_preset(name, n_pool=args.n_pool, transforms=transforms,
                                  n_train=args.n_train, n_eval=args.n_test)
        print(f"(preset 'quick': a {len(p.zoo)}-model zoo and {len(p.reference)} reference models "
              f"sized to fit the 5,000 MNIST images bundled with invlab: a "
              f"{p.settings.n_pool:,}-image training pool, the rest is the ID test split. A "
              "smoke run, not the paper's scale: the full preset needs the full MNIST files.)",
              flush=True)
    return {"n_pool": args.n_pool, "transforms": transforms, "n_train": args.n_train,
            "n_eval": args.n_test, "test_sets": test_sets, "models_file": args.models,
            "preprocess": args.preprocess}
