"""``invlab zoo train SPEC``: train a zoo (YAML file or preset name) and write its table."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from invlab.errors import check_writable
from invlab.zoo import load_zoo_spec, train_zoo, write_zoo_table, zoo_data


def _cmd_zoo_train(args: argparse.Namespace) -> int:
    models = load_zoo_spec(args.spec)
    check_writable(args.checkpoints, "--checkpoints")  # preflight: before any training
    check_writable(Path(args.table).parent, "--table folder")
    t0 = time.perf_counter()
    rows = train_zoo(models, zoo_data(args.n_pool, args.data_seed), args.checkpoints,
                     stacked=not args.sequential)
    path = write_zoo_table(rows, args.table)
    accs = sorted(r["id_accuracy"] for r in rows)
    print(f"{len(rows)} models ({sum(r['reused'] for r in rows)} from the cache) in "
          f"{(time.perf_counter() - t0) / 60:.1f} min; ID accuracy {accs[0]:.3f} .. {accs[-1]:.3f}; "
          f"table: {path}")
    return 0


def add_zoo_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    zoo = sub.add_parser("zoo", help="model zoos (generalization study)")
    zsub = zoo.add_subparsers(dest="zoo_command", metavar="ACTION")
    t = zsub.add_parser("train", help="train a zoo spec (YAML file or preset quick/full)")
    t.add_argument("spec", help="YAML file with a list of grids (or key 'zoo'), or quick/full")
    t.add_argument("--checkpoints", default="runs/checkpoints", help="checkpoint cache root")
    t.add_argument("--table", default="runs/zoo.csv", help="zoo table CSV to write")
    t.add_argument("--sequential", action="store_true", help="train one model at a time")
    t.add_argument("--n-pool", type=int, default=10_000, help="MNIST training pool size")
    t.add_argument("--data-seed", type=int, default=0)
    t.set_defaults(func=_cmd_zoo_train)
