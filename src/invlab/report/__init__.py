"""Reports: tables (Markdown/CSV/JSON) and figures (PNG/SVG) rebuilt from the results store."""

from invlab.io import remove_stale_temps
from invlab.report.tables import aggregate_seeds, fmt_pm, write_table
from invlab.sweep import ResultsStore, output_lock

__all__ = ["aggregate_seeds", "fmt_pm", "write_table", "build_report", "redraw_from_files"]


def build_report(out_dir: str) -> list[str]:
    """Rebuild every report for the studies found in ``out_dir/store.sqlite``."""
    from pathlib import Path


    path = Path(out_dir) / "store.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"no results store at {path}; run a study with --out {out_dir}")
    with output_lock(out_dir):  # a running study on this folder would race on the files
        remove_stale_temps(out_dir)  # .fig_*.tmp etc. of a killed report writer
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


def redraw_from_files(out_dir: str) -> tuple[list[str], list[str]]:
    """In a study directory without a results store (e.g. committed results): redraw the
    figures and tables that its files hold the data of, from those files. Returns
    ``(written paths, notes on what could not be redrawn)``.

    - generalization: everything but ``test_sets.png``, from ``models.csv``;
    - drift, spectral: Fig. 4 / Fig. 5 from ``summary.json`` (not the ν-search plot);
    - origins: heat maps, factors, specificity, alignment from ``summary.json`` (not the
      box-plot profiles, which need the stored quartiles);
    - genuine: nothing (t-SNE, saliency and ν search need the stored features and trials).
    """
    import json
    from pathlib import Path

    out = Path(out_dir)
    cfg = {}
    if (out / "config.json").exists():
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    study = str(cfg.get("study", ""))
    written: list[str] = []
    notes: list[str] = []
    summary = out / "summary.json"
    if study == "generalization" and (out / "models.csv").exists():
        from invlab.report.generalization import build_report as generalization

        written += generalization(out)
        notes.append("test_sets.png needs the test-set caches: left as it is")
    elif study == "drift" and summary.exists():
        from invlab.report.drift import figure4

        rows = json.loads(summary.read_text(encoding="utf-8"))
        for mode in sorted({r["mode"] for r in rows}):
            written += figure4(rows, mode, out)
    elif study == "spectral" and summary.exists():
        from invlab.report.spectral import figure5

        written += figure5(json.loads(summary.read_text(encoding="utf-8")), out)
        notes.append("nu_search_spectral.png needs the stored ν-search trials: left as it is")
    elif study == "origins" and summary.exists():
        from invlab.report.origins import redraw_from_summary

        written += redraw_from_summary(out)
        notes.append("fig_profile_*.png need the stored quartiles: left as they are")
    else:
        notes.append(f"study {study or '?'}: its figures need the results store: left as they are")
    return written, notes
