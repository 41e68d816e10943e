"""The named source ``photos``: real colour photographs that install offline.

Origin (the image files ship inside the wheels; nothing is downloaded):

- scikit-learn's ``sklearn.datasets.load_sample_images``: ``china.jpg`` (a Chinese temple)
  and ``flower.jpg`` (a flower), 640×427, "released under a Creative Commons license by
  their authors" (scikit-learn's documentation);
- scikit-image's ``skimage.data`` colour photographs that are bundled in its wheel
  (``astronaut`` — Eileen Collins, NASA, public domain; ``chelsea`` and ``coffee`` — Stefan van
  der Walt and Rachel Michetti, CC0; ``rocket`` — SpaceX, public domain; ``motorcycle`` —
  the Middlebury stereo data set (left view); ``hubble_deep_field`` — NASA, public domain;
  ``immunohistochemistry`` — a microscopy photo, CC0; ``retina`` — a fundus photo, CC-BY;
  ``colorwheel`` is synthetic and excluded). Only those present in the installed
  scikit-image and readable without a download are used (:func:`photo_paths` checks each).
  scikit-image comes with the optional extra ``invlab[pretrained]``; without it the source
  holds scikit-learn's two photos (stated in the log).

The photos are unlabelled and of mixed sizes, so ``open_images("photos")`` needs a
``preprocess`` spec (e.g. ``"resize=256,crop=224"``).
"""

from __future__ import annotations

import logging
from pathlib import Path

from invlab.data.errors import DataError

log = logging.getLogger("invlab.data")

__all__ = ["photo_paths", "SKIMAGE_PHOTOS"]  # open_photos: invlab.data.images

# skimage.data name -> file name in skimage/data/ (the bundled, non-downloaded files)
SKIMAGE_PHOTOS = {
    "astronaut": "astronaut.png",
    "chelsea": "chelsea.png",
    "coffee": "coffee.png",
    "rocket": "rocket.jpg",
    "motorcycle_left": "motorcycle_left.png",
    "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png",
    "retina": "retina.jpg",
}


def photo_paths() -> list[tuple[str, Path]]:
    """``(name, file)`` of every bundled photograph found, scikit-learn's first.

    Raises:
        DataError: neither scikit-learn's nor scikit-image's image files are installed.
    """
    out: list[tuple[str, Path]] = []
    try:
        import sklearn.datasets  # lazy: import time (1.1 s); optional here (skipped if absent)

        d = Path(sklearn.datasets.__file__).parent / "images"
        for name in ("china.jpg", "flower.jpg"):
            if (d / name).is_file():
                out.append((f"sklearn/{name}", d / name))
    except ImportError:
        pass
    try:
        import skimage

        d = Path(skimage.__file__).parent / "data"
        found = [(f"skimage/{n}", d / f) for n, f in SKIMAGE_PHOTOS.items() if (d / f).is_file()]
        out += found
        if not found:
            log.warning("photos: scikit-image is installed but none of its bundled photos were "
                        "found in %s; using scikit-learn's only", d)
    except ImportError:
        log.info("photos: scikit-image is not installed (pip install 'invlab[pretrained]'); "
                 "using scikit-learn's 2 photos only")
    if not out:
        raise DataError("photos: no bundled photographs found (scikit-learn's china.jpg / "
                        "flower.jpg, scikit-image's data files); pip install scikit-learn "
                        "scikit-image")
    return out
