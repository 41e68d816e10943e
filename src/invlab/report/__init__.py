"""Reports: tables (Markdown/CSV/JSON) and figures (PNG/SVG) rebuilt from the results store."""

from invlab.report.tables import aggregate_seeds, fmt_pm, write_table

__all__ = ["aggregate_seeds", "fmt_pm", "write_table", "build_report"]


def build_report(out_dir: str) -> list[str]:
    """Rebuild every report for the studies found in ``out_dir/store.sqlite``."""
    from pathlib import Path

    from invlab.sweep import ResultsStore, output_lock

    path = Path(out_dir) / "store.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"no results store at {path}; run a study with --out {out_dir}")
    with output_lock(out_dir):  # a running study on this folder would race on the files
        return _build(out_dir, path, ResultsStore(path))


def _build(out_dir: str, path: object, store: object) -> list[str]:
    from invlab.studies.registry import list_studies

    studies = {r["study"] for r in store.cells()}  # type: ignore[attr-defined]
    # the genuine study's ν-tuning cells also live in drift/spectral stores ("genuine-tune")
    written: list[str] = []
    for study in list_studies():  # registration order: genuine, drift, spectral, ...
        if study.name in studies:
            written += study.report(out_dir)
    if not written:
        raise ValueError(f"{path} holds no known study (found: {sorted(studies) or 'none'})")
    return written
