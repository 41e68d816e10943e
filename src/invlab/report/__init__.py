"""Reports: tables (Markdown/CSV/JSON) and figures (PNG/SVG) rebuilt from the results store."""

from invlab.report.tables import aggregate_seeds, fmt_pm, write_table

__all__ = ["aggregate_seeds", "fmt_pm", "write_table", "build_report"]


def build_report(out_dir: str) -> list[str]:
    """Rebuild every report for the studies found in ``out_dir/store.sqlite``."""
    from pathlib import Path

    from invlab.io import remove_stale_temps
    from invlab.sweep import ResultsStore, output_lock

    path = Path(out_dir) / "store.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"no results store at {path}; run a study with --out {out_dir}")
    with output_lock(out_dir):  # a running study on this folder would race on the files
        remove_stale_temps(out_dir)  # .fig_*.tmp etc. of a killed report writer
        return _build(out_dir, path, ResultsStore(path))


def _build(out_dir: str, path: object, store: object) -> list[str]:
    studies = {r["study"] for r in store.cells()}  # type: ignore[attr-defined]
    # the genuine study's ν-tuning cells also live in drift/spectral stores ("genuine-tune")
    written: list[str] = []
    if "genuine" in studies:
        from invlab.report.genuine import build_report as genuine

        written += genuine(out_dir)
    if "drift" in studies:
        from invlab.report.drift import build_report as drift

        written += drift(out_dir)
    if "spectral" in studies:
        from invlab.report.spectral import build_report as spectral

        written += spectral(out_dir)
    if "origins" in studies:
        from invlab.report.origins import build_report as origins

        written += origins(out_dir)
    if "generalization" in studies:
        from invlab.report.generalization import build_report as generalization

        written += generalization(out_dir)
    if not written:
        raise ValueError(f"{path} holds no known study (found: {sorted(studies) or 'none'})")
    return written
