"""What :func:`invlab.metrics.measure` reads images from: a tensor, a Dataset or a DataLoader.

All three become an :class:`ImageSource`: ``n`` images of one shape ``[C, H, W]``, the first
image(s) for the up-front checks (shape, transform input, probes), the labels when they are
known up front, and :meth:`ImageSource.chunks`, which yields the engine's chunks
``(a, b, x[a:b], y[a:b] | None)`` in order. Only one chunk (plus, for a DataLoader, one of
its batches) is in memory at a time, so peak memory does not grow with ``N``; a chunk equals
``images[a:b]`` of the equal tensor, so every value is bit-identical to the tensor path.

- ``torch.Tensor`` ``[N, C, H, W]``: sliced.
- ``torch.utils.data.Dataset`` (map-style, with ``len``) yielding ``image [C, H, W]`` or
  ``(image, label)``: read with a ``DataLoader`` whose batches are exactly the engine's
  chunks (``num_workers`` decode in parallel). Its labels are ``dataset.labels`` when the
  dataset has that attribute (as :func:`invlab.data.open_images` does), else read with the
  images.
- ``torch.utils.data.DataLoader`` yielding ``images [B, C, H, W]`` or ``(images, labels)``
  in any batch size: iterated once and re-cut into the engine's chunks (a shuffling loader
  is measured in the order it yields, and its labels are taken from the batches).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset, IterableDataset

from invlab.metrics.errors import MeasureError

__all__ = ["ImageSource", "image_source"]


def _split(item: Any, where: str) -> tuple[Any, Any]:
    """``(image(s), label(s) | None)`` from a dataset item or a loader batch."""
    if isinstance(item, (tuple, list)):
        if len(item) == 1:
            return item[0], None
        if len(item) == 2:
            return item[0], item[1]
        raise MeasureError(f"{where} yields tuples of {len(item)} values; expected image or "
                           "(image, label)")
    if isinstance(item, dict):
        raise MeasureError(f"{where} yields dicts; expected image or (image, label)")
    return item, None


def _as_images(x: Any, where: str) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as e:
            raise MeasureError(f"{where} yields {type(x).__name__}, not an image tensor "
                               f"[C, H, W]") from e
    return x


class ImageSource:
    """``n`` images ``[C, H, W]`` streamed in chunks (see the module doc).

    Attributes:
        n: number of images.
        head: the first one or two images ``[m, C, H, W]`` (checks and probes).
        labels: ``[N]`` labels when known up front (tensor ``labels=``, ``dataset.labels``),
            else None.
        streams_labels: the labels come with the chunks (a Dataset without ``labels`` or a
            DataLoader yielding ``(images, labels)``).
        kind: ``tensor``, ``dataset`` or ``dataloader`` (for messages).
    """

    def __init__(self, n: int, head: torch.Tensor, labels: Any, streams_labels: bool,
                 kind: str) -> None:
        self.n, self.head, self.labels = n, head, labels
        self.streams_labels, self.kind = streams_labels, kind

    @property
    def labelled(self) -> bool:
        return self.labels is not None or self.streams_labels

    @property
    def shape(self) -> tuple[int, ...]:
        return (self.n, *self.head.shape[1:])

    def chunks(self, bounds: list[tuple[int, int]]
               ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
        raise NotImplementedError


class _TensorSource(ImageSource):
    def __init__(self, images: torch.Tensor, labels: Any) -> None:
        super().__init__(images.shape[0], images[:2], labels, False, "tensor")
        self.images = images

    def chunks(self, bounds: list[tuple[int, int]]
               ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
        for a, b in bounds:
            yield a, b, self.images[a:b], None


def _check_chunk(x: torch.Tensor, a: int, shape: tuple[int, ...], kind: str) -> torch.Tensor:
    if x.dim() != 4 or tuple(x.shape[1:]) != shape[1:]:
        got = list(x.shape[1:]) if x.dim() == 4 else list(x.shape)
        raise MeasureError(
            f"the {kind} yields images of different shapes: [C, H, W] = {list(shape[1:])} for "
            f"image 0 but {got} near image {a}; resize/crop them to one size (e.g. "
            "invlab.data.open_images(..., preprocess='resize=256,crop=224'))")
    if not x.is_floating_point():
        raise MeasureError(f"the {kind} yields images of dtype {x.dtype} (near image {a}); "
                           "measure needs floating-point images (e.g. uint8 / 255)")
    return x


def _finite(x: torch.Tensor, a: int, n: int) -> None:
    bad = ~torch.isfinite(x.sum(dim=(1, 2, 3)))
    if bool(bad.any()):
        idx = bad.nonzero().flatten()
        bad[idx] = ~torch.isfinite(x[idx]).flatten(1).all(1)
    if bool(bad.any()):
        first = (bad.nonzero().flatten()[:5] + a).tolist()
        raise MeasureError(f"images contain NaN/inf pixels (of {n} samples; first sample "
                           f"indices: {first}); every metric of those samples would be NaN or "
                           "meaningless: drop or repair them")


def _labels_of(y: Any, a: int, b: int, kind: str) -> torch.Tensor:
    lab = torch.as_tensor(y)
    if lab.is_floating_point() or lab.is_complex() or lab.dtype == torch.bool:
        raise MeasureError(f"the {kind}'s labels must be integer class indices, found dtype "
                           f"{lab.dtype} (images {a}..{b - 1})")
    if lab.dim() != 1 or lab.shape[0] != b - a:
        raise MeasureError(f"the {kind} yields {tuple(lab.shape)} labels for {b - a} images "
                           f"(images {a}..{b - 1}); expected one integer per image")
    if bool((lab < 0).any()):
        raise MeasureError(f"labels must be >= 0, found {int(lab.min())} (images {a}..{b - 1})")
    return lab.long()


class _DatasetSource(ImageSource):
    def __init__(self, ds: Dataset, num_workers: int) -> None:
        try:
            n = len(ds)  # type: ignore[arg-type]
        except TypeError as e:
            raise MeasureError(f"the dataset ({type(ds).__name__}) has no len(); measure needs "
                               "a map-style Dataset or a DataLoader") from e
        if n == 0:
            raise MeasureError(f"the dataset ({type(ds).__name__}) is empty (N = 0)")
        img, lab = _split(ds[0], "the dataset")
        head = _as_images(img, "the dataset")
        if head.dim() != 3:
            raise MeasureError(f"the dataset must yield images [C, H, W], found shape "
                               f"{tuple(head.shape)}"
                               + ("; add a channel dimension" if head.dim() == 2 else ""))
        known = getattr(ds, "labels", None)
        if known is not None and lab is None:
            known = None  # labels attribute of an unlabelled view: not ours to pair
        super().__init__(n, head.unsqueeze(0), known, lab is not None and known is None,
                         "dataset")
        self.ds, self.num_workers = ds, num_workers

    def chunks(self, bounds: list[tuple[int, int]]
               ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
        loader = DataLoader(self.ds, batch_sampler=[range(a, b) for a, b in bounds],
                            num_workers=self.num_workers)
        for (a, b), item in zip(bounds, loader):
            x, y = _split(item, "the dataset")
            x = _check_chunk(_as_images(x, "the dataset"), a, self.shape, "dataset")
            yield a, b, x, (_labels_of(y, a, b, "dataset") if self.streams_labels else None)


class _LoaderSource(ImageSource):
    def __init__(self, loader: DataLoader) -> None:
        if isinstance(loader.dataset, IterableDataset):
            raise MeasureError("the DataLoader reads an IterableDataset (no len()); measure needs "
                               "the number of images up front: use a map-style Dataset")
        try:
            if loader.batch_size is not None:
                ns = len(loader.sampler)  # type: ignore[arg-type]
                n = (ns // loader.batch_size) * loader.batch_size if loader.drop_last else ns
            else:
                n = sum(len(bb) for bb in loader.batch_sampler)  # type: ignore[arg-type,union-attr]
        except TypeError as e:
            raise MeasureError("the DataLoader's sampler has no len(); measure needs the number "
                               "of images up front") from e
        if n == 0:
            raise MeasureError("the DataLoader yields no images (N = 0)")
        self.it = iter(loader)
        x, y = _split(next(self.it), "the DataLoader")
        x = _as_images(x, "the DataLoader")
        if x.dim() != 4:
            raise MeasureError(f"the DataLoader must yield image batches [B, C, H, W], found "
                               f"shape {tuple(x.shape)}")
        self.pending: list[tuple[torch.Tensor, Any]] = [(x, y)]
        super().__init__(n, x[:2], None, y is not None, "DataLoader")

    def chunks(self, bounds: list[tuple[int, int]]
               ) -> Iterator[tuple[int, int, torch.Tensor, torch.Tensor | None]]:
        xs: list[torch.Tensor] = []
        ys: list[torch.Tensor] = []
        have = 0
        it = self.it
        for a, b in bounds:
            while have < b - a:
                if self.pending:
                    x, y = self.pending.pop()
                else:
                    try:
                        x, y = _split(next(it), "the DataLoader")
                    except StopIteration:
                        raise MeasureError(f"the DataLoader stopped after {a + have} of the "
                                           f"{self.n} images it announced") from None
                    x = _as_images(x, "the DataLoader")
                x = _check_chunk(x, a + have, self.shape, "DataLoader")
                if self.streams_labels:
                    if y is None:
                        raise MeasureError(f"the DataLoader yields labels for some batches but "
                                           f"not near image {a + have}")
                    ys.append(_labels_of(y, a + have, a + have + x.shape[0], "DataLoader"))
                xs.append(x)
                have += x.shape[0]
            cat = xs[0] if len(xs) == 1 else torch.cat(xs)
            xb, rest = cat[: b - a], cat[b - a:]
            yb = rest_y = None
            if self.streams_labels:
                caty = ys[0] if len(ys) == 1 else torch.cat(ys)
                yb, rest_y = caty[: b - a], caty[b - a:]
            yield a, b, xb, yb
            xs = [rest] if rest.shape[0] else []
            ys = [rest_y] if rest_y is not None and rest_y.shape[0] else []
            have = rest.shape[0]
        if have or next(it, None) is not None:
            raise MeasureError(f"the DataLoader yields more than the {self.n} images it "
                               "announced (len of its sampler)")


def image_source(images: Any, labels: Any = None, num_workers: int = 0) -> ImageSource:
    """Wrap a tensor, a Dataset or a DataLoader (see the module doc); anything else raises."""
    if isinstance(images, torch.Tensor):
        return _TensorSource(images, labels)
    if isinstance(images, DataLoader):
        src: ImageSource = _LoaderSource(images)
    elif isinstance(images, Dataset):
        if isinstance(images, IterableDataset):
            raise MeasureError("an IterableDataset has no len(); measure needs a map-style "
                               "Dataset (or wrap it in a DataLoader over a map-style one)")
        src = _DatasetSource(images, num_workers)
    else:
        raise MeasureError(f"images must be a torch.Tensor [N, C, H, W], a torch Dataset or a "
                           f"DataLoader, found {type(images).__name__}")
    if labels is not None:  # explicit labels= win over the data's own
        src.labels, src.streams_labels = labels, False
    return src
