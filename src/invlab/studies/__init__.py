"""Studies: one module per paper experiment (genuine, drift, spectral, origins,
generalization), each registered in :mod:`invlab.studies.registry`.

``list_studies()`` names them; ``invlab.run_study(name, preset, out=...)`` runs one and
then builds its report with ``invlab.build_report(out)``, which also rebuilds it later from
the store alone.
"""

from invlab.studies.registry import Study, build_report, get_study, list_studies, register, run_study

__all__ = ["Study", "build_report", "get_study", "list_studies", "register", "run_study"]
