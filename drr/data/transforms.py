"""Deterministic image preprocessing shared by the datasets (no random crops or flips).

Two paths:

* natural images (ImageNet, CC-3M, COCO): `to_rgb`, then `resize_center_crop` -- the ADM /
  RQ-VAE convention: while the shorter side is at least twice the target, halve the image with a
  box filter; then resize with PIL bicubic so that the shorter side equals the target; then cut the
  centred square (offsets rounded down). EXIF orientation is ignored, as in that convention.
* Fashion-MNIST (28x28 gray): `pad_or_resize_gray` -- pad symmetrically with black (0) when the
  target is 28 + an even number of pixels, otherwise a bicubic resize; then replicated to RGB.

Every function returns uint8 data; `to_chw_tensor` makes the (3, R, R) torch.uint8 tensor of the
dataset item contract.
"""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

MNIST_SIDE = 28


# --- natural images -------------------------------------------------------------------------------

def to_rgb(img: Image.Image) -> Image.Image:
    """Convert any PIL mode to 8-bit RGB.

    L/1/CMYK/YCbCr/palette go through PIL's conversion; alpha (RGBA, LA, PA, palette with a
    transparent colour) is dropped without compositing, as ``convert("RGB")`` in the ADM reference
    code does; 16-bit and float gray (I, I;16, F) are scaled to 0..255 first.
    """
    mode = img.mode
    if mode == "RGB":
        return img
    if mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")  # PIL warns when a palette image with transparency skips RGBA
    elif mode in ("I", "F") or mode.startswith("I;16"):
        arr = np.asarray(img, dtype=np.float64)
        if arr.size and arr.max() > 255:
            arr = arr / 257.0  # 16-bit range -> 8-bit
        img = Image.fromarray(np.clip(np.rint(arr), 0, 255).astype(np.uint8), "L")
    return img.convert("RGB")


def resize_center_crop(img: Image.Image, size: int) -> np.ndarray:
    """Shorter side to `size` (box halving, then bicubic), centre crop -> (size, size, C) uint8."""
    while min(img.size) >= 2 * size:
        img = img.resize((img.width // 2, img.height // 2), resample=Image.Resampling.BOX)
    scale = size / min(img.size)
    new = (max(size, round(img.width * scale)), max(size, round(img.height * scale)))
    if new != img.size:
        img = img.resize(new, resample=Image.Resampling.BICUBIC)
    arr = np.asarray(img)
    top = (arr.shape[0] - size) // 2
    left = (arr.shape[1] - size) // 2
    return arr[top:top + size, left:left + size]


def natural_image(img: Image.Image, size: int) -> torch.Tensor:
    """The full natural-image path: RGB conversion, resize + centre crop, (3, size, size) uint8."""
    return to_chw_tensor(resize_center_crop(to_rgb(img), size))


def natural_description(size: int) -> str:
    return (f"resize shorter side to {size} (box halving while >= 2x, then bicubic), "
            f"center crop {size}, RGB")


# --- Fashion-MNIST --------------------------------------------------------------------------------

def gray_pads(size: int, side: int = MNIST_SIDE) -> int | None:
    """Pixels of black padding per side, or None when `size` needs a bicubic resize instead."""
    if size >= side and (size - side) % 2 == 0:
        return (size - side) // 2
    return None


def pad_or_resize_gray(arr: np.ndarray, size: int) -> np.ndarray:
    """One (28, 28) uint8 gray image to (size, size): symmetric black padding or bicubic resize."""
    pad = gray_pads(size, arr.shape[0])
    if pad is not None:
        if pad == 0:
            return arr
        return np.pad(arr, pad, mode="constant", constant_values=0)
    img = Image.fromarray(np.ascontiguousarray(arr), "L")
    return np.asarray(img.resize((size, size), resample=Image.Resampling.BICUBIC))


def gray_description(size: int, side: int = MNIST_SIDE) -> str:
    pad = gray_pads(size, side)
    if pad is None:
        return f"resize {side}->{size} (bicubic), gray->RGB"
    if pad == 0:
        return f"none ({side}x{side}), gray->RGB"
    return f"pad {side}->{size} ({pad} px black each side), gray->RGB"


# --- tensors --------------------------------------------------------------------------------------

def to_chw_tensor(arr: np.ndarray) -> torch.Tensor:
    """(H, W, 3) or (H, W) uint8 array -> (3, H, W) torch.uint8 tensor (gray replicated)."""
    arr = np.asarray(arr, dtype=np.uint8)
    if arr.ndim == 2:
        arr = np.broadcast_to(arr[None], (3, *arr.shape))
    else:
        arr = arr.transpose(2, 0, 1)
    return torch.from_numpy(np.ascontiguousarray(arr))
