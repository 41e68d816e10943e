"""MkDocs hook: the committed figures under results/ become part of the site, so the paper
pages show them without a second copy in docs/ (``![...](../results/<study>/<fig>.png)``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parent


def on_files(files: Files, config: Any) -> Files:
    for png in sorted((ROOT / "results").glob("*/*.png")):
        uri = png.relative_to(ROOT).as_posix()
        if files.get_file_from_path(uri) is None:
            files.append(File.generated(config, uri, abs_src_path=str(png)))
    return files
