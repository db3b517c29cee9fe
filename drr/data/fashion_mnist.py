"""Fashion-MNIST, the embedded default dataset (Xiao et al. 2017), from its canonical IDX files.

Splits: 'train' (60,000 images) and 'test' (10,000), 28x28 gray, 10 classes.

Sources, in this order:

1. ``data.root`` when set: the folder must hold the split's two IDX files (gzip or not);
2. Debian's package ``dataset-fashion-mnist`` (`DEBIAN_DIR`);
3. ``<data.cache_dir>/fashion-mnist/``: files fetched earlier from the canonical site
   (`BASE_URL`, overridable with the environment variable ``DRR_FASHION_MNIST_URL``) -- a fetch
   happens only when ``data.download`` is true.

Every file is checked against the sha256 of its *decompressed* content (`SHA256`): Debian repacks
the .gz files, so their bytes differ from the canonical ones while their content is identical. A
check is done once per file per process. Preprocessing: see drr.data.transforms (black padding to
`resolution` when that is 28 + an even number, bicubic resize otherwise; gray replicated to RGB).
"""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path

import numpy as np
import torch

from drr.core.errors import DrrError
from drr.data import transforms
from drr.data.download import content_sha256, download, read_content

NAME = "fashion-mnist"
BASE_URL = "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/"
URL_ENV = "DRR_FASHION_MNIST_URL"
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")

CLASS_NAMES = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt",
               "Sneaker", "Bag", "Ankle boot"]
SPLITS = {
    "train": ("train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
    "test": ("t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
}
# sha256 and length of the decompressed IDX content
SHA256 = {
    "t10k-images-idx3-ubyte":
        ("5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b", 7840016),
    "t10k-labels-idx1-ubyte":
        ("0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34", 10008),
    "train-images-idx3-ubyte":
        ("c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888", 47040016),
    "train-labels-idx1-ubyte":
        ("bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9", 60008),
}
IMAGE_MAGIC, LABEL_MAGIC = 2051, 2049

_lock = threading.Lock()
_verified: dict[tuple, str] = {}     # (path, size, mtime_ns) -> verified sha256 of the content
_loaded: dict[tuple, tuple] = {}     # (image key, label key, verify) -> (images, labels)


def base_url(url: str | None = None) -> str:
    """The download base: the argument, else $DRR_FASHION_MNIST_URL, else `BASE_URL`."""
    url = url or os.environ.get(URL_ENV) or BASE_URL
    return url if url.endswith("/") else url + "/"


def _check_split(split: str) -> tuple[str, str]:
    if split not in SPLITS:
        raise DrrError(f"data.split: Fashion-MNIST has splits {sorted(SPLITS)}, not {split!r}")
    return SPLITS[split]


def find_file(folder, name: str) -> Path | None:
    """`folder`/name.gz or `folder`/name (the first that exists), else None."""
    for candidate in (Path(folder) / f"{name}.gz", Path(folder) / name):
        if candidate.is_file():
            return candidate
    return None


def cache_folder(data_cfg: dict) -> Path:
    return Path(data_cfg.get("cache_dir") or "results/cache/data").expanduser() / NAME


def locate(data_cfg: dict, split: str, *, url: str | None = None) -> tuple[list[Path], str]:
    """The split's (images, labels) files and a word for where they came from.

    Fetches them into the cache when needed and allowed (the download is verified there).
    """
    names = _check_split(split)
    root = data_cfg.get("root")
    if root:
        folder = Path(root).expanduser()
        files = [find_file(folder, n) for n in names]
        for n, f in zip(names, files):
            if f is None:
                raise DrrError(f"data.root {folder}: Fashion-MNIST file {n}.gz (or {n}) not found "
                               f"there")
        return files, "root"
    files = [find_file(DEBIAN_DIR, n) for n in names]
    if all(files):
        return files, "debian"
    cache = cache_folder(data_cfg)
    files = [find_file(cache, n) for n in names]
    if all(files):
        return files, "cache"
    if not data_cfg.get("download"):
        raise DrrError(
            f"Fashion-MNIST {split} split not found; either set data.root to a folder holding "
            f"{names[0]}.gz and {names[1]}.gz, or install the Debian package "
            f"dataset-fashion-mnist (files in {DEBIAN_DIR}), or set data.download: true to fetch "
            f"them from {base_url(url)} into {cache}")
    out = []
    for n, f in zip(names, files):
        if f is None:
            sha, size = SHA256[n]
            f = download(base_url(url) + f"{n}.gz", cache / f"{n}.gz",
                         decompressed_sha256=sha, decompressed_size=size)
            st = f.stat()
            with _lock:
                _verified[(str(f.resolve()), st.st_size, st.st_mtime_ns)] = sha
        out.append(f)
    return out, "download"


def _key(path: Path) -> tuple:
    st = path.stat()
    return (str(path.resolve()), st.st_size, st.st_mtime_ns)


def verify_file(path: Path, name: str, content: bytes | None = None) -> None:
    """Check a file's decompressed content against `SHA256` (once per file per process)."""
    key = _key(path)
    sha, size = SHA256[name]
    with _lock:
        if _verified.get(key) == sha:
            return
    if content is not None:
        got, got_size = hashlib.sha256(content).hexdigest(), len(content)
    else:
        got, got_size = content_sha256(path)
    if got != sha:
        raise DrrError(f"{path}: sha256 of the decompressed content of {name} is {got}, expected "
                       f"{sha} ({got_size} bytes, expected {size}); the file is corrupt or not "
                       f"the canonical Fashion-MNIST")
    with _lock:
        _verified[key] = sha


def parse_idx(data: bytes, path, magic: int) -> np.ndarray:
    """IDX bytes -> uint8 (N, rows, cols) for images (magic 2051) or (N,) for labels (2049)."""
    ndim = 3 if magic == IMAGE_MAGIC else 1
    head = 4 + 4 * ndim
    if len(data) < head:
        raise DrrError(f"{path}: too short for an IDX file ({len(data)} bytes)")
    got_magic = int.from_bytes(data[:4], "big")
    if got_magic != magic:
        kind = "images" if magic == IMAGE_MAGIC else "labels"
        raise DrrError(f"{path}: IDX magic number {got_magic}, expected {magic} ({kind}, uint8)")
    dims = [int.from_bytes(data[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim)]
    if ndim == 3 and dims[1:] != [transforms.MNIST_SIDE] * 2:
        raise DrrError(f"{path}: images are {dims[1]}x{dims[2]}, expected 28x28")
    want = head + int(np.prod(dims))
    if len(data) != want:
        raise DrrError(f"{path}: {len(data)} bytes, expected {want} for dims {dims}")
    return np.frombuffer(data, dtype=np.uint8, offset=head).reshape(dims)


def load_split(files: list[Path], *, verify: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """Read (and verify) a split's images (N, 28, 28) and labels (N,), cached per process."""
    img_path, lbl_path = files
    names = [p.name[:-3] if p.name.endswith(".gz") else p.name for p in files]
    expected = tuple(SHA256.get(n) for n in names) if verify else None
    cache_key = (_key(img_path), _key(lbl_path), expected)
    with _lock:
        if cache_key in _loaded:
            return _loaded[cache_key]
    arrays = []
    for path, name, magic in zip(files, names, (IMAGE_MAGIC, LABEL_MAGIC)):
        data = read_content(path)
        if verify:
            verify_file(path, name, data)
        arrays.append(parse_idx(data, path, magic))
    images, labels = arrays
    if len(images) != len(labels):
        raise DrrError(f"{lbl_path}: {len(labels)} labels for {len(images)} images in {img_path}")
    if len(labels) and labels.max() >= len(CLASS_NAMES):
        raise DrrError(f"{lbl_path}: label {int(labels.max())} out of range 0..9")
    with _lock:
        _loaded[cache_key] = (images, labels)
    return images, labels


class FashionMNIST(torch.utils.data.Dataset):
    """Fashion-MNIST as (3, R, R) uint8 RGB items; the whole split is held in memory."""

    name = NAME
    num_classes = len(CLASS_NAMES)
    class_names = CLASS_NAMES

    def __init__(self, data_cfg: dict, split: str, *, verify: bool = True, url: str | None = None):
        self.split = split
        self.resolution = int(data_cfg.get("resolution") or 32)
        files, self.origin = locate(data_cfg, split, url=url)
        self.files = [str(f) for f in files]
        self.source = str(Path(files[0]).parent)
        images, labels = load_split(files, verify=verify)
        n = data_cfg.get("max_images")
        if n is not None:
            images, labels = images[:n], labels[:n]
        self.images, self.labels = images, labels
        self.preprocessing = transforms.gray_description(self.resolution)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> dict:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        i = int(i) % len(self)
        gray = transforms.pad_or_resize_gray(self.images[i], self.resolution)
        return {"image": transforms.to_chw_tensor(gray), "index": i,
                "label": int(self.labels[i]), "caption": ""}

    def description(self) -> dict:
        return {"dataset": self.name, "split": self.split, "num_images": len(self),
                "resolution": self.resolution, "source": self.source, "origin": self.origin,
                "files": self.files, "preprocessing": self.preprocessing,
                "num_classes": self.num_classes, "class_names": list(self.class_names)}
