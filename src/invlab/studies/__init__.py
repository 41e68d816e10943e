"""Studies: one module per paper experiment (genuine, drift, spectral, origins,
generalization), each registered in :mod:`invlab.studies.registry`.

``list_studies()`` names them; ``invlab.run_study(name, preset, out=...)`` runs one.
"""

from invlab.studies.registry import Study, get_study, list_studies, register, run_study

__all__ = ["Study", "get_study", "list_studies", "register", "run_study"]
