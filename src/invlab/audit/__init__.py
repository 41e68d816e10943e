"""``invlab audit``: is a model's invariance real? One command for a model a researcher brings.

For every transform (groups such as ``r4``; B21 families such as ``rotate`` per magnitude;
fixed transforms such as ``brightness_up:1.4``) the audit measures, with
:func:`invlab.metrics.measure` on pixel-space images normalized with the model's statistics:

- output invariance on ``limit`` images: DI = ``kl`` (KL(p(x) ‖ p(T·x)), nats), LI =
  ``logit_l2`` (‖f(x) − f(T·x)‖₂), EI = ``effective_invariance`` (D22), ``agreement``
  (argmax f(x) = argmax f(T·x)), ``accuracy`` of T·x (when labels are known);
- representation invariance per layer (B21; ``--layers``, default the penultimate);
- saliency invariance SI (M23) on the first ``n_si`` images, where T is invertible;

plus the Jacobian's σ_max once (no transform) on the first ``n_sensitivity`` images. Each
transform gets a verdict in plain words from two thresholds (:data:`THRESHOLDS`): outputs
invariant when DI ≤ 0.05 and agreement ≥ 0.95; mechanism invariant when SI ≥ 0.9.

``run_audit`` returns the numbers (written as ``audit.json``); ``write_audit`` adds
``audit.html`` (one self-contained page from the report template), the saliency grids and
the profile plots (PNG) in ``out``.

Example::

    invlab audit --model my_model.py:build --data cifar_test.npz --transforms r4,rotate
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from invlab.audit.measuring import (
    DEFAULT_TRANSFORMS,
    OUTPUT_METRICS,
    AuditError,
    AuditSettings,
    call_factory,
    check_normalization,
    load_audit_data,
    load_user_model,
    run_audit,
)
from invlab.audit.rendering import format_summary, profile_plot, render_audit_html, saliency_grid, write_audit
from invlab.audit.verdicts import CANNOT, HEALTH, THRESHOLDS, audit_claims, model_health, verdict
from invlab.errors import InvlabError, check_writable, user_code_error
from invlab.sweep.provenance import invlab_version

__all__ = ["CANNOT", "DEFAULT_TRANSFORMS", "HEALTH", "OUTPUT_METRICS", "THRESHOLDS",
           "AuditError", "AuditSettings", "audit", "audit_claims", "call_factory",
           "check_normalization", "format_summary", "load_audit_data", "load_user_model",
           "model_health", "profile_plot", "render_audit_html", "run_audit", "saliency_grid",
           "verdict", "write_audit"]


def audit(model_spec: str, data_spec: str | None, settings: AuditSettings | None = None,
          out: str | Path | None = None, progress: bool = True, *,
          preprocess: str | None = None) -> dict[str, Any]:
    """Load, measure, write: the whole ``invlab audit`` (returns the audit.json document).
    ``preprocess`` (e.g. ``"resize=256,crop=224"``) applies to image files and ``photos``."""
    s = settings or AuditSettings()
    if out is not None:  # preflight: a read-only --out fails now, not after the audit
        check_writable(out, "--out")
    model, norm, info = load_user_model(model_spec, s.device)
    if data_spec is None:
        data_spec = ((info.get("metadata") or {}).get("data") or {}).get("dataset")
        if data_spec is None:
            raise AuditError("--data is required: an invlab source (mnist, fashion-mnist), a "
                             ".npz file or an image folder")
    x, y, dinfo = load_audit_data(data_spec, info, s.limit, s.seed, preprocess)
    try:
        doc = run_audit(model, x, y, norm, s, progress=progress)
    except InvlabError:
        raise
    except (Exception, SystemExit) as e:  # the user's model failed (or sys.exit) mid-audit
        raise AuditError(str(user_code_error(f"--model {model_spec}", "measuring the model",
                                             e)) + " (--debug shows the traceback)") from e
    doc.update(model={k: v for k, v in info.items() if k != "metadata"}, data=dinfo,
               normalization=norm, invlab_version=invlab_version())
    if out is not None:
        write_audit(doc, out, model, x, norm)
    return doc
