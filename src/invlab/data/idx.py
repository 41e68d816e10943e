"""Reader and writer for the IDX format of MNIST-style files (gzip or raw)."""

from __future__ import annotations

import gzip
import math
import os
import zlib
from pathlib import Path

import numpy as np

from invlab.errors import InvlabError
from invlab.io import atomic_write

# IDX type codes -> big-endian numpy dtypes.
IDX_DTYPES: dict[int, str] = {
    0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8",
}


class IDXError(InvlabError, ValueError):
    """A malformed, truncated or corrupt IDX file."""


def _raw_bytes(path: Path) -> bytes:
    data = path.read_bytes()
    if data[:2] == b"\x1f\x8b":
        try:
            return gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as e:  # BadGzipFile is an OSError
            raise IDXError(f"{path}: gzip stream is corrupt or truncated: expected a complete "
                           f"gzip stream, found {type(e).__name__}: {e}") from e
    return data


def read_idx(path: str | os.PathLike[str]) -> np.ndarray:
    """Read an IDX file (``.gz`` detected by content) into a numpy array.

    Layout: 2 zero bytes, a type code (0x08 ubyte .. 0x0E float64), the number of
    dimensions, one big-endian uint32 per dimension, then ``prod(dims)`` items.

    Raises:
        IDXError: naming the file, what was expected and what was found, for a bad magic
            number, unknown type code, missing header bytes or a wrong payload size.
        FileNotFoundError: if the file does not exist.
    """
    p = Path(path)
    buf = _raw_bytes(p)
    if len(buf) < 4:
        raise IDXError(f"{p}: expected an IDX header of at least 4 bytes, found {len(buf)} bytes")
    if buf[0] != 0 or buf[1] != 0:
        raise IDXError(
            f"{p}: bad magic number: expected the first two bytes to be 0x00 0x00, "
            f"found 0x{buf[0]:02x} 0x{buf[1]:02x} (not an IDX file?)"
        )
    code, ndim = buf[2], buf[3]
    if code not in IDX_DTYPES:
        raise IDXError(
            f"{p}: unknown IDX type code 0x{code:02x}; expected one of "
            + ", ".join(f"0x{c:02x}" for c in IDX_DTYPES)
        )
    if ndim == 0:
        raise IDXError(f"{p}: expected at least 1 dimension, found 0")
    header = 4 + 4 * ndim
    if len(buf) < header:
        raise IDXError(f"{p}: truncated header: expected {header} bytes for {ndim} dims, "
                       f"found {len(buf)}")
    dims = tuple(int(d) for d in np.frombuffer(buf, ">u4", count=ndim, offset=4))
    dtype = np.dtype(IDX_DTYPES[code])
    expected = math.prod(dims) * dtype.itemsize  # exact Python ints: dims cannot overflow
    found = len(buf) - header
    if found != expected:
        what = "truncated" if found < expected else "has trailing bytes"
        raise IDXError(
            f"{p}: file {what}: dims {dims} of {dtype.name} need {expected} payload bytes, "
            f"found {found}"
        )
    arr = np.frombuffer(buf, dtype, offset=header).reshape(dims)
    return arr.astype(dtype.newbyteorder("="))


def write_idx(path: str | os.PathLike[str], array: np.ndarray, compress: bool | None = None) -> None:
    """Write ``array`` as IDX (gzip if ``compress`` or the name ends in ``.gz``), atomically."""
    p = Path(path)
    arr = np.asarray(array)
    codes = {np.dtype(v).newbyteorder("="): k for k, v in IDX_DTYPES.items()}
    key = arr.dtype.newbyteorder("=")
    if key not in codes:
        raise IDXError(f"cannot write dtype {arr.dtype} as IDX; use one of "
                       + ", ".join(np.dtype(v).name for v in IDX_DTYPES.values()))
    header = bytes([0, 0, codes[key], arr.ndim]) + np.asarray(arr.shape, ">u4").tobytes()
    payload = header + arr.astype(IDX_DTYPES[codes[key]]).tobytes()
    if compress or (compress is None and p.suffix == ".gz"):
        payload = gzip.compress(payload)
    atomic_write(p, payload)
