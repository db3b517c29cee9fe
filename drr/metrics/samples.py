"""Reading sample sets: ``.npz`` files in the ADM evaluator's format, streamed in batches.

A sample set is an .npz with ``arr_0`` uint8 (N, H, W, 3) images (NHWC, RGB), and optionally
``drafts`` (the draft-phase images, same shape), ``labels`` int (N,) and ``captions`` str (N,)
(drr/sampling/generate.py writes these). 50,000 images of 256x256 are 9.8 GB, so images are read
one batch at a time straight from the zip member (stored or deflated), never all at once.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np
import torch

from drr.core.errors import DrrError

PHASE_KEYS = {"revised": "arr_0", "draft": "drafts"}  # --phase -> npz key


class NpzImages:
    """One uint8 (N, H, W, 3) array of an .npz, iterated as uint8 (B, 3, H, W) torch batches."""

    def __init__(self, path, key: str = "arr_0"):
        self.path, self.key = Path(path), key
        try:
            with zipfile.ZipFile(self.path) as z:
                names = z.namelist()
                member = key + ".npy"
                if member not in names:
                    have = sorted(n[:-4] for n in names if n.endswith(".npy"))
                    raise DrrError(f"{self.path}: no array '{key}' (has {', '.join(have) or 'nothing'})")
                with z.open(member) as f:
                    self.shape, self.dtype = read_npy_header(f, self.path, key)
        except (zipfile.BadZipFile, OSError) as e:
            raise DrrError(f"{self.path}: not a readable .npz ({e})") from None
        if self.dtype != np.uint8 or len(self.shape) != 4 or self.shape[3] != 3:
            raise DrrError(f"{self.path}: '{key}' must be uint8 (N, H, W, 3) images (the ADM evaluator's "
                           f"format), got {self.dtype} {self.shape}")

    def __len__(self) -> int:
        return self.shape[0]

    def batches(self, batch_size: int, limit: int | None = None):
        """Yield uint8 torch tensors (B, 3, H, W) of the first `limit` (default all) images."""
        n = len(self) if limit is None else min(limit, len(self))
        row = int(np.prod(self.shape[1:]))
        with zipfile.ZipFile(self.path) as z, z.open(self.key + ".npy") as f:
            read_npy_header(f, self.path, self.key)
            done = 0
            while done < n:
                b = min(batch_size, n - done)
                buf = f.read(b * row)
                if len(buf) != b * row:
                    raise DrrError(f"{self.path}: '{self.key}' truncated after {done} images")
                arr = np.frombuffer(buf, np.uint8).reshape(b, *self.shape[1:])
                yield torch.from_numpy(arr.copy()).permute(0, 3, 1, 2).contiguous()
                done += b

    def numpy(self, limit: int | None = None) -> np.ndarray:
        """All (or the first `limit`) images as one uint8 (N, H, W, 3) array."""
        parts = [b.permute(0, 2, 3, 1).numpy() for b in self.batches(4096, limit)]
        return np.concatenate(parts) if parts else np.zeros((0, *self.shape[1:]), np.uint8)


def read_npy_header(f, path, key):
    try:
        version = np.lib.format.read_magic(f)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
        else:
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
    except ValueError as e:
        raise DrrError(f"{path}: '{key}' is not a .npy array ({e})") from None
    if fortran and len(shape) > 1:
        raise DrrError(f"{path}: '{key}' is stored in Fortran order; write it with np.savez (C order)")
    return tuple(shape), np.dtype(dtype)


def npz_keys(path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as z:
            return sorted(n[:-4] for n in z.namelist() if n.endswith(".npy"))
    except (zipfile.BadZipFile, OSError) as e:
        raise DrrError(f"{path}: not a readable .npz ({e})") from None


def read_captions(path, n: int) -> list[str] | None:
    """The ``captions`` array as a list of n str, or None when the file has none."""
    if "captions" not in npz_keys(path):
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            caps = z["captions"]
    except ValueError as e:
        raise DrrError(f"{path}: 'captions' must be a str array saved without pickling ({e})") from None
    if caps.ndim != 1 or len(caps) != n:
        raise DrrError(f"{path}: 'captions' must be a 1-d array of {n} strings, got shape {caps.shape}")
    return [str(c) for c in caps]
