"""PNG grids of sample images (the sample sets' grid.png, the inpainting figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from drr.core.errors import DrrError
from drr.core.files import atomic_path


def save_grid(images: np.ndarray, path: Path, nrow: int) -> None:
    """uint8 (N, R, R, 3) -> PNG grid with `nrow` images per row, written atomically."""
    import torchvision
    from PIL import Image

    if len(images) == 0:
        raise DrrError(f"{path}: no images for the grid")
    grid = torchvision.utils.make_grid(torch.from_numpy(np.ascontiguousarray(images))
                                       .permute(0, 3, 1, 2), nrow=nrow, padding=2, pad_value=255)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


def grid_columns(n: int) -> int:
    """Images per row of a roughly square grid."""
    return max(1, int(np.ceil(np.sqrt(n))))
