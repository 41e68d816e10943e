"""``invlab data list`` and ``invlab data fetch``."""

from __future__ import annotations

import argparse
import json
from typing import Any

from invlab.cli._table import _table
from invlab.data import describe_sources, fetch
from invlab.data.sources import MIRRORS


def _cmd_data_list(args: argparse.Namespace) -> int:
    rows = describe_sources()
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        print(_table(rows, ["name", "images", "where"]))
    return 0


def _cmd_data_fetch(args: argparse.Namespace) -> int:
    print(f"downloaded to {fetch(args.name)}")
    return 0


def add_data_parser(sub: Any) -> None:
    """``invlab data list`` and ``invlab data fetch`` on an argparse sub-parser collection."""
    data = sub.add_parser("data", help="data sources: list, fetch")
    dsub = data.add_subparsers(dest="data_command", metavar="ACTION")
    dl = dsub.add_parser("list", help="each source, where it was found, and its size")
    dl.add_argument("--json", action="store_true")
    dl.set_defaults(func=_cmd_data_list)
    fetchable = ", ".join(MIRRORS)
    df = dsub.add_parser("fetch", help=f"download a source into the user cache (needs internet;"
                         f" fetchable: {fetchable})",
                         description=f"Download a data source's IDX files (checksums verified) "
                         f"into the user cache. Fetchable sources: {fetchable}. Without "
                         "internet, put the IDX files in $INVLAB_DATA/NAME/ instead.")
    df.add_argument("name", metavar="NAME",
                    help=f"the source to download, one of: {fetchable}")
    df.set_defaults(func=_cmd_data_fetch)

