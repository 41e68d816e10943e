"""The study registry: one shape for every paper study, and one verb to run any of them.

Each study is a :class:`Study` record: its name, a one-line description, the presets of its
YAML file (``<name>.yaml`` beside this module), the function that builds a preset, the
function that runs its cells into an output folder (resumable; it writes the store and the
resolved config, never a report), the function that builds its report from the store, and
the text the CLI prints.

Running and reporting are two steps: :func:`run_study` runs the cells, records
``provenance.json`` and then calls :func:`build_report`, the one path from a store to the
tables, figures, ``summary.json``, claims and ``report.html`` (``invlab report DIR`` calls
it too).

```python
import invlab
[s.name for s in invlab.studies.list_studies()]
# genuine, drift, spectral, origins, generalization
out = invlab.run_study("genuine", preset="demo", out="runs/demo", workers=2)
invlab.build_report(out)  # again, e.g. after a change to the report code
```

``invlab study NAME`` and ``invlab report DIR`` dispatch through :func:`get_study`: each
study also declares its command-line flags and how they become :meth:`Study.run` keywords
(``arguments``/``keywords``, in :mod:`invlab.studies.flags`; by default the flags every
study takes), so a sixth study is one more :func:`register` call (and its ``<name>.yaml``)
and touches no CLI code.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import importlib
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from invlab.io import remove_stale_temps
from invlab.sweep import ConfigError, ResultsStore, StudyError, output_lock

__all__ = ["Study", "build_report", "get_study", "list_studies", "register", "run_study"]

RECORD_PROVENANCE = "invlab.report.html:record_provenance"  # provenance.json of a run
WRITE_HTML = "invlab.report.html:write_html_report"  # report.html from a folder's files
_FLAGS = "invlab.studies.flags"  # the studies' command-line flags (Study.arguments, .keywords)


def _ref(path: str) -> Callable[..., Any]:
    """``"module:function"`` → the function (imported on first use, so the registry is light:
    ``import invlab`` loads no study and no report module, hence no pandas)."""
    mod, _, name = path.partition(":")
    return getattr(importlib.import_module(mod), name)  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Study:
    """One paper study.

    Attributes:
        name: the study's name (``invlab study NAME``, ``run_study(NAME)``).
        description: one line (``invlab study --help``).
        module: the study's module; it defines ``preset(name, **fields)`` and the runner.
        runner: name of the run function in ``module``; called as
            ``runner(preset, out, checkpoints, workers=, progress=, preset_name=, executor=,
            **run_options)``, it runs the cells into ``out/store.sqlite`` (and writes
            ``config.yaml``/``config.json``) and returns the output folder.
        report_module: the report module; it defines ``build_report(out)`` (the study's
            tables, figures, ``summary.json`` and claims from ``out/store.sqlite``) and
            ``summary``.
        summary: name of the function in ``report_module`` that returns the text the CLI
            prints after a run (tables and claims) from the output folder.
        run_options: keyword arguments of the runner that are not preset fields (e.g.
            ``models_file``); every other keyword of :meth:`run` is a preset field.
        genuine_models: the name of the study's preset class when it measures the genuine
            study's models (drift, spectral): keywords that are not fields of that class
            override the genuine preset they come from.
        reduced_note: printed by the CLI after a run of any preset other than ``full``.
        report_on_failure: when cells fail, :meth:`run` still builds the tables and figures
            of what finished (no ``report.html``) before it raises the ``StudyError``.
        arguments: ``"module:function"`` called as ``function(parser, study)``: adds the
            study's flags to its ``invlab study NAME`` sub-parser (:meth:`add_arguments`).
            They must include the run flags the CLI reads itself (``--quick``, ``--preset``,
            ``--out``, ``--checkpoints``, the executor flags, ``--no-progress``). Default:
            :func:`invlab.studies.flags.common_arguments`, the flags every study takes.
        keywords: ``"module:function"`` called as ``function(args)`` on the parsed flags:
            returns the keywords of :meth:`run` besides the preset, ``out`` and the run flags
            (:meth:`run_keywords`), after the study's own checks (one-line errors, before
            anything runs). Default: :func:`invlab.studies.flags.common_keywords`, the preset
            fields of the common flags (``groups``, ``seeds``, ``epochs``, ...).
    """

    name: str
    description: str
    module: str
    runner: str
    report_module: str
    summary: str = "print_table"
    run_options: tuple[str, ...] = ()
    genuine_models: str = ""
    reduced_note: str = ""
    report_on_failure: bool = False
    arguments: str = "invlab.studies.flags:common_arguments"
    keywords: str = "invlab.studies.flags:common_keywords"

    @cached_property
    def presets(self) -> tuple[str, ...]:
        """The preset names of ``<name>.yaml`` (e.g. ``("full", "quick")``)."""
        text = resources.files("invlab.studies").joinpath(f"{self.name}.yaml").read_text()
        return tuple(yaml.safe_load(text))

    def make_preset(self, preset: str | Mapping[str, Any] = "full",
                    **fields: Any) -> tuple[Any, str, dict[str, Any]]:
        """``(preset object, preset name, genuine overrides)`` from a preset name or a dict.

        A dict holds preset fields on top of the preset named by its optional ``"base"`` key
        (default ``full``); its name is then ``custom``. ``fields`` (None values ignored)
        override both. For drift and spectral, fields that are not their own go to the
        genuine preset their models come from (``groups``, ``seeds``, ``epochs``, ...).
        """

        if isinstance(preset, Mapping):
            values = dict(preset)
            base, name = str(values.pop("base", "full")), "custom"
        elif isinstance(preset, str):
            values, base, name = {}, preset, preset
        else:
            raise ConfigError("preset", f"preset must be a name ({', '.join(self.presets)}) or "
                              f"a dict of fields, got {type(preset).__name__}")
        if base not in self.presets:
            raise ConfigError("preset", f"unknown preset {base!r} for study {self.name!r}; "
                              f"valid: {', '.join(self.presets)}")
        values.update({k: v for k, v in fields.items() if v is not None})
        genuine: dict[str, Any] = {}
        if self.genuine_models:
            own = {f.name for f in dataclasses.fields(_ref(f"{self.module}:{self.genuine_models}"))}
            genuine = {k: values.pop(k) for k in list(values) if k not in own}
        return _ref(f"{self.module}:preset")(base, **values), name, genuine

    def run(self, preset: str | Mapping[str, Any] = "full", out: str | Path | None = None, *,
            checkpoints: str | Path | None = None, workers: int = 1, executor: Any = None,
            progress: bool = True, report: bool = True, **overrides: Any) -> Path:
        """Run the study's cells into ``out`` (default ``runs/<name>``; resumable), record
        ``provenance.json`` and, unless ``report=False``, build the report there with
        :func:`build_report`; returns ``out``. See :func:`run_study`."""
        out = Path("runs") / self.name if out is None else out
        t0 = time.perf_counter()
        try:
            out = Path(self.run_cells(preset, out, checkpoints=checkpoints, workers=workers,
                                      executor=executor, progress=progress, **overrides))
        except StudyError:
            if report and self.report_on_failure:  # report whatever finished, then the failures
                with contextlib.suppress(ValueError):  # none of the study's cells finished
                    build_report(out, html=False)
            raise
        with output_lock(out):  # provenance is the run's: wall time, data sources found here
            _ref(RECORD_PROVENANCE)(out, time.perf_counter() - t0)
        if report:
            build_report(out)
        return out

    def run_cells(self, preset: str | Mapping[str, Any], out: str | Path, *,
                  checkpoints: str | Path | None = None, workers: int = 1, executor: Any = None,
                  progress: bool = True, **overrides: Any) -> Path:
        """Only the running step: the study's runner on the resolved preset (cells into
        ``out/store.sqlite``, the resolved config beside it); no provenance, no report."""
        opts = {k: overrides.pop(k) for k in list(overrides) if k in self.run_options}
        p, name, genuine = self.make_preset(preset, **overrides)
        if genuine:
            opts["genuine_overrides"] = genuine
        if checkpoints is None:  # shared per preset: checkpoints are keyed by their config
            base = name if isinstance(preset, str) else str(preset.get("base", "full"))
            checkpoints = str(Path("runs") / ("checkpoints" if base == "full"
                                              else f"checkpoints-{base}"))
        return Path(_ref(f"{self.module}:{self.runner}")(
            p, out, str(checkpoints), workers=workers, progress=progress, preset_name=name,
            executor=executor, **opts))

    def report(self, out: str | Path) -> list[str]:
        """The study's own report step: its tables, figures, ``summary.json`` and claims in
        ``out`` from ``out/store.sqlite``; returns the paths written. :func:`build_report`
        calls it (under the folder's lock, then writes ``report.html``)."""
        return list(_ref(f"{self.report_module}:build_report")(out))

    def summary_text(self, out: str | Path) -> str:
        """The tables and claims the CLI prints after a run, read from ``out``."""
        return str(_ref(f"{self.report_module}:{self.summary}")(out))

    def add_arguments(self, parser: argparse.ArgumentParser) -> None:
        """Add the study's command-line flags to ``parser`` (``invlab study NAME``)."""
        _ref(self.arguments)(parser, self)

    def run_keywords(self, args: argparse.Namespace) -> dict[str, Any]:
        """The keywords of :meth:`run` that the parsed flags ``args`` give (the study's own
        checks and notes first)."""
        return dict(_ref(self.keywords)(args))


_REGISTRY: dict[str, Study] = {}


def register(study: Study) -> Study:
    """Add ``study`` to the registry (its name must be new); returns it."""
    if study.name in _REGISTRY:
        raise ValueError(f"a study named {study.name!r} is already registered")
    _REGISTRY[study.name] = study
    return study


def list_studies() -> list[Study]:
    """The registered studies, in registration order (genuine, drift, spectral, origins,
    generalization)."""
    return list(_REGISTRY.values())


def get_study(name: str) -> Study:
    """The study called ``name``; an unknown name raises ``ConfigError`` listing the known."""

    if name not in _REGISTRY:
        raise ConfigError("study", f"unknown study {name!r}; known studies: "
                          + ", ".join(_REGISTRY))
    return _REGISTRY[name]


def run_study(name: str, preset: str | Mapping[str, Any] = "full", *,
              out: str | Path | None = None, checkpoints: str | Path | None = None,
              workers: int = 1, executor: Any = None, progress: bool = True,
              report: bool = True, **overrides: Any) -> Path:
    """Run study ``name`` end to end (resumable), then build its report; returns ``out``.

    Args:
        name: one of :func:`list_studies` (``genuine``, ``drift``, ``spectral``, ``origins``,
            ``generalization``).
        preset: a preset name of the study's YAML (``full``, ``quick``, ``demo``...) or a
            dict of preset fields on top of the preset named by its ``"base"`` key (default
            ``full``), e.g. ``{"base": "quick", "seeds": [0], "epochs": 2}``.
        out: output folder (default ``runs/<name>``): ``store.sqlite``, tables, figures,
            ``summary.json``, ``config.yaml``, ``report.html``.
        checkpoints: shared checkpoint cache (default ``runs/checkpoints`` for ``full``,
            ``runs/checkpoints-<preset>`` otherwise), as ``invlab study``.
        workers: parallel cells; ``executor``: ``"serial"``, ``"process"``, ``"ray"`` or an
            executor object (default from ``workers``, :func:`invlab.sweep.choose_executor`).
        progress: progress bars on stderr.
        report: build the report at the end (:func:`build_report`); ``False`` runs the cells
            only (store, config, ``provenance.json``): ``invlab.build_report(out)`` or
            ``invlab report DIR`` builds it later, with the same files.
        **overrides: preset fields (None ignored), e.g. ``seeds=(0,)``, ``epochs=5``; and the
            study's own options: ``models_file``/``data``/``preprocess`` (origins),
            ``test_sets``/``models_file``/``preprocess`` (generalization). Drift and spectral send fields that are not
            their own to the genuine preset their models come from.

    Same store, same cells and same numbers as ``invlab study NAME`` with the same preset.
    """
    return get_study(name).run(preset, out, checkpoints=checkpoints, workers=workers,
                               executor=executor, progress=progress, report=report,
                               **overrides)


def build_report(out_dir: str | Path, *, html: bool = True) -> list[str]:
    """Build the report of the study folder ``out_dir`` from ``out_dir/store.sqlite`` alone
    (no checkpoint, data or training): the one path from a store to its outputs.

    For every registered study whose cells the store holds (in registration order), its
    :meth:`Study.report` (tables, figures, ``summary.json``, ``claims.json``/``claims.md``);
    then, with ``html``, ``report.html`` (:func:`invlab.report.html.write_html_report`).
    Holds the folder's writer lock meanwhile (a running study on it raises ``OutputLocked``).

    Returns:
        The paths written, ``report.html`` last.

    Raises:
        FileNotFoundError: ``out_dir`` holds no results store.
        ValueError: the store holds no registered study.
    """
    path = Path(out_dir) / "store.sqlite"
    if not path.exists():
        raise FileNotFoundError(f"no results store at {path}; run a study with --out {out_dir}")
    with output_lock(out_dir):  # a running study on this folder would race on the files
        remove_stale_temps(out_dir)  # .fig_*.tmp etc. of a killed report writer
        with ResultsStore(path) as store:
            found = {r["study"] for r in store.cells()}
        # the genuine study's ν-tuning cells also live in drift/spectral stores ("genuine-tune")
        written: list[str] = []
        for study in list_studies():  # registration order: genuine, drift, spectral, ...
            if study.name in found:
                written += study.report(out_dir)
        if not written:
            raise ValueError(f"{path} holds no known study (found: {sorted(found) or 'none'})")
        if html:
            written.append(str(_ref(WRITE_HTML)(out_dir)))
    return written


register(Study(
    "genuine", "M23 Table 1, Figs. 2-3: DA vs WT vs IR", "invlab.studies.genuine",
    "run_genuine", "invlab.report.genuine", report_on_failure=True,
    arguments=f"{_FLAGS}:genuine_arguments", keywords=f"{_FLAGS}:genuine_keywords",
    reduced_note="a reduced run. The paper's full study is `invlab study genuine --out "
                 "results/genuine`: 2 datasets x 2 groups x 4 seeds, 300 epochs, nu tuned per "
                 "dataset and group."))
register(Study(
    "drift", "M23 Fig. 4: invariance under MNIST→FMNIST drift", "invlab.studies.drift",
    "run_drift", "invlab.report.drift", summary="print_tables", genuine_models="DriftPreset",
    arguments=f"{_FLAGS}:drift_arguments", keywords=f"{_FLAGS}:drift_keywords"))
register(Study(
    "spectral", "M23 Fig. 5: sigma_max of the input Jacobian", "invlab.studies.spectral",
    "run_spectral", "invlab.report.spectral", genuine_models="SpectralPreset"))
register(Study(
    "origins", "B21: where invariance comes from (data, augmentation, architecture); "
    "profiles, ablation, factors of variation", "invlab.studies.origins", "run_origins",
    "invlab.report.origins", run_options=("models_file", "data", "preprocess"),
    arguments=f"{_FLAGS}:origins_arguments", keywords=f"{_FLAGS}:origins_keywords"))
register(Study(
    "generalization", "D22: does invariance (EI) predict accuracy across a zoo and shifts?",
    "invlab.studies.generalization", "run_generalization", "invlab.report.generalization",
    run_options=("test_sets", "models_file", "preprocess"),
    arguments=f"{_FLAGS}:generalization_arguments", keywords=f"{_FLAGS}:generalization_keywords"))
