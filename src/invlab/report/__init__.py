"""Reports: tables (Markdown/CSV/JSON) and figures (PNG/SVG) rebuilt from the results store.

One module per study (:mod:`~invlab.report.genuine`, ``drift``, ``spectral``, ``origins``,
``generalization``), each with its ``build_report(out)``; :mod:`~invlab.report.html` renders
``report.html`` from the files they wrote. A study folder's whole report is built by
:func:`invlab.build_report` (:func:`invlab.studies.registry.build_report`), which picks the
study modules through the study registry; this package does not import the studies.
"""

import json
from pathlib import Path

from invlab.report.tables import aggregate_seeds, fmt_pm, write_table

__all__ = ["aggregate_seeds", "fmt_pm", "write_table", "redraw_from_files"]


def redraw_from_files(out_dir: str | Path) -> tuple[list[str], list[str]]:
    """In a study directory without a results store (e.g. committed results): redraw the
    figures and tables that its files hold the data of, from those files. Returns
    ``(written paths, notes on what could not be redrawn)``.

    - generalization: everything but ``test_sets.png``, from ``models.csv``;
    - drift, spectral: Fig. 4 / Fig. 5 from ``summary.json`` (not the ν-search plot);
    - origins: heat maps, factors, specificity, alignment from ``summary.json`` (not the
      box-plot profiles, which need the stored quartiles);
    - genuine: nothing (t-SNE, saliency and ν search need the stored features and trials).

    It dispatches on the ``study`` named in ``config.json``, not through the study registry
    (which sits above this package).
    """
    out = Path(out_dir)
    cfg = {}
    if (out / "config.json").exists():
        cfg = json.loads((out / "config.json").read_text(encoding="utf-8"))
    study = str(cfg.get("study", ""))
    written: list[str] = []
    notes: list[str] = []
    summary = out / "summary.json"
    # lazy (the four imports below): invlab.audit imports invlab.report.claims, so this
    # package loads with the CLI; the study reports would bring scipy into `invlab --version`
    if study == "generalization" and (out / "models.csv").exists():
        from invlab.report.generalization import build_report  # lazy: startup (see above)

        written += build_report(out)
        notes.append("test_sets.png needs the test-set caches: left as it is")
    elif study == "drift" and summary.exists():
        from invlab.report.drift import figure4  # lazy: startup

        rows = json.loads(summary.read_text(encoding="utf-8"))
        for mode in sorted({r["mode"] for r in rows}):
            written += figure4(rows, mode, out)
    elif study == "spectral" and summary.exists():
        from invlab.report.spectral import figure5  # lazy: startup

        written += figure5(json.loads(summary.read_text(encoding="utf-8")), out)
        notes.append("nu_search_spectral.png needs the stored ν-search trials: left as it is")
    elif study == "origins" and summary.exists():
        from invlab.report.origins import redraw_from_summary  # lazy: startup

        written += redraw_from_summary(out)
        notes.append("fig_profile_*.png need the stored quartiles: left as they are")
    else:
        notes.append(f"study {study or '?'}: its figures need the results store: left as they are")
    return written, notes
