"""ImageNet (or any class-folder image set) from ``<data.root>/<split>/<wnid>/<file>``.

* Class index: the sorted names of the class folders of the *train* split (``data.train_split``),
  shared by every split; another split's folders must be a subset of it (an unknown one is an
  error that names it). `write_class_index` writes it as JSON
  ``{"wnids": [...], "num_classes": N}``.
* Samples: class folders in sorted order, files (.jpeg/.jpg/.png, any case) sorted by name within
  each; the position in that order is the sample's stable index. Non-image files are ignored.
* Preprocessing: drr.data.transforms.natural_image -- RGB conversion, shorter side to `resolution`
  (box halving, then bicubic), centre crop (the ADM / RQ-VAE convention).

Also serves CIFAR-10-as-JPEG folders and similar layouts (any split name, e.g. 'test').
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import torch
from PIL import Image

from drr.core.errors import DrrError
from drr.core.files import write_json
from drr.data import transforms
from drr.data.files import is_image_file

NAME = "imagenet"


def dataset_root(data_cfg: dict, what: str = "ImageNet") -> Path:
    root = data_cfg.get("root")
    if not root:
        raise DrrError(f"data.root: must be set for {data_cfg.get('name', what)} (a folder holding "
                       f"<split>/<class>/ image folders)")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DrrError(f"data.root {root}: folder not found")
    return root


def _split_dir(root: Path, split: str) -> Path:
    d = root / split
    if not d.is_dir():
        have = sorted(p.name for p in root.iterdir() if p.is_dir())
        raise DrrError(f"data.root {root}: split folder {split!r} not found "
                       f"(folders there: {have})")
    return d


def _class_dirs(split_dir: Path) -> list[str]:
    with os.scandir(split_dir) as it:
        entries = list(it)
    flat = sorted(e.name for e in entries if e.is_file() and is_image_file(e.name))
    if flat:
        raise DrrError(f"{split_dir}: images must sit in class folders (<split>/<wnid>/<file>); "
                       f"found {len(flat)} image(s) directly in the split folder, e.g. {flat[0]}")
    return sorted(e.name for e in entries if e.is_dir() and not e.name.startswith("."))


def class_index(data_cfg: dict) -> list[str]:
    """The sorted class-folder names (wnids) of the train split."""
    root = dataset_root(data_cfg)
    train = data_cfg.get("train_split") or "train"
    wnids = _class_dirs(_split_dir(root, train))
    if not wnids:
        raise DrrError(f"{root / train}: no class folders")
    return wnids


def write_class_index(data_cfg: dict, path) -> dict:
    """Write the class index as JSON {"wnids": [...], "num_classes": N}; return it."""
    wnids = class_index(data_cfg)
    index = {"wnids": wnids, "num_classes": len(wnids)}
    write_json(path, index)
    return index


def load_image(path, resolution: int) -> torch.Tensor:
    """Open and preprocess an image file; a corrupt or unreadable one is a DrrError naming it."""
    try:
        with Image.open(path) as img:
            img.load()
            return transforms.natural_image(img, resolution)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DrrError(f"{path}: cannot read image ({e})") from None


def decode_image_bytes(data: bytes, resolution: int, where: str) -> torch.Tensor:
    """Like `load_image` for in-memory bytes (tar members); `where` names them in errors."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            img.load()
            return transforms.natural_image(img, resolution)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise DrrError(f"{where}: cannot read image ({e})") from None


class ImageFolder(torch.utils.data.Dataset):
    """ImageNet-style class folders; items are (3, R, R) uint8 RGB with the class label."""

    name = NAME

    def __init__(self, data_cfg: dict, split: str):
        self.name = data_cfg.get("name") or NAME
        self.split = split
        self.resolution = int(data_cfg["resolution"])
        root = dataset_root(data_cfg)
        split_dir = _split_dir(root, split)
        self.class_names = class_index(data_cfg)
        self.num_classes = len(self.class_names)
        label_of = {w: i for i, w in enumerate(self.class_names)}
        self.source = str(split_dir)
        self.files: list[str] = []
        self.labels: list[int] = []
        limit = data_cfg.get("max_images")
        for wnid in _class_dirs(split_dir):
            if wnid not in label_of:
                raise DrrError(f"{split_dir / wnid}: class folder {wnid!r} is not in the class "
                               f"index of the {data_cfg.get('train_split') or 'train'} split")
            with os.scandir(split_dir / wnid) as it:
                names = sorted(e.name for e in it if is_image_file(e.name) and e.is_file())
            for n in names:
                self.files.append(str(split_dir / wnid / n))
                self.labels.append(label_of[wnid])
            if limit is not None and len(self.files) >= limit:
                break
        if limit is not None:
            del self.files[limit:], self.labels[limit:]
        if not self.files:
            raise DrrError(f"{split_dir}: no images (.jpeg/.jpg/.png) in class folders")
        self.preprocessing = transforms.natural_description(self.resolution)

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = int(i) % len(self)
        return {"image": load_image(self.files[i], self.resolution), "index": i,
                "label": self.labels[i], "caption": ""}

    def description(self) -> dict:
        return {"dataset": self.name, "split": self.split, "num_images": len(self),
                "resolution": self.resolution, "source": self.source,
                "preprocessing": self.preprocessing, "num_classes": self.num_classes}
