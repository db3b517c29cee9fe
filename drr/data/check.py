"""The data of an experiment checked up front: is it where `data.root` says, in the layout drr reads?

The workflow calls `check` when it plans a job that reads images (training or reporting a tokenizer,
encoding code maps, reference statistics; workflow/rules/common.smk), for that job's experiment and
split only. So a missing or mis-laid dataset is one line before any job is submitted, not an error
in the first encoding job hours later, and a dataset that the requested targets never read (CC-3M
for Table 1) need not be there. It looks at a few directory entries of each split folder (`LOOK`),
never walks the dataset: ImageNet's train split has a million files.

    imagenet  <data.root>/<split>/<wnid>/<file>.JPEG     (drr.data.imagenet)
    cc3m      <data.root>/<split>/00000/<key>.jpg + <key>.txt, or <data.root>/<split>/*.tar
              (img2dataset's 'files' or 'webdataset' output; drr.data.captions)

Fashion-MNIST is not checked here: the process that reads it finds or downloads it itself
(drr.data.fashion_mnist); COCO is checked by its dataset class.
"""

from __future__ import annotations

import os
from itertools import islice
from pathlib import Path

from drr.core.errors import DrrError
from drr.data.files import CAPTION_IMAGE_EXTENSIONS, is_image_file

LOOK = 64  # directory entries looked at per folder

LAYOUTS = {
    "imagenet": "<data.root>/<split>/<wnid>/*.JPEG (class folders)",
    "cc3m": "<data.root>/<split>/ as img2dataset writes it: shard folders 00000/ holding "
            "<key>.jpg + <key>.txt, or .tar shards",
}


def _entries(folder: Path) -> list[os.DirEntry]:
    """The first `LOOK` entries of `folder`, hidden ones left out."""
    with os.scandir(folder) as it:
        return [e for e in islice(it, LOOK) if not e.name.startswith(".")]


def _imagenet_problem(split_dir: Path) -> str | None:
    entries = _entries(split_dir)
    classes = [e for e in entries if e.is_dir()]
    if not classes:
        flat = [e.name for e in entries if e.is_file() and is_image_file(e.name)]
        return (f"images directly in {split_dir}/ (e.g. {flat[0]}), not in class folders" if flat
                else f"no class folders in {split_dir}/")
    if not any(e.is_file() and is_image_file(e.name) for e in _entries(Path(classes[0].path))):
        return f"no .JPEG/.jpg/.png images among the first entries of {classes[0].path}/"
    return None


def _cc3m_problem(split_dir: Path) -> str | None:
    entries = _entries(split_dir)

    def has_images(es):
        return any(e.is_file() and e.name.lower().endswith(CAPTION_IMAGE_EXTENSIONS) for e in es)

    if any(e.is_file() and e.name.endswith(".tar") for e in entries) or has_images(entries):
        return None
    shards = sorted(e.path for e in entries if e.is_dir())
    if not shards:
        return f"no img2dataset shards in {split_dir}/"
    if not has_images(_entries(Path(shards[0]))):
        return f"no images (.jpg/.jpeg/.png/.webp) among the first entries of {shards[0]}/"
    return None


def splits(cfg: dict) -> list[str]:
    """The splits an experiment reads: training, held-out, and the reference statistics' one."""
    d = cfg["data"]
    return list(dict.fromkeys([d["train_split"], d["eval_split"], cfg["metrics"]["reference_split"]]))


def check(cfg: dict, source, only: list[str] | None = None) -> None:
    """DrrError naming `source` (the experiment file), the folder, the expected layout and the
    setting to change, when `cfg`'s dataset is not in place; nothing for datasets checked elsewhere.
    `only`: the splits to look at (default: every split the experiment reads, `splits`)."""
    name = cfg["data"]["name"]
    if name not in LAYOUTS:
        return
    hint = f"expected {LAYOUTS[name]}; put the data there or set data.root in {source}"
    root = cfg["data"]["root"]
    if not root:
        raise DrrError(f"{source}: data.root is null; {name} has no download, {hint}")
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DrrError(f"{source}: data.root {root}: folder not found; {hint}")
    for split in (splits(cfg) if only is None else only):
        split_dir = root / split
        if not split_dir.is_dir():
            raise DrrError(f"{source}: data.root {root}: split folder {split}/ not found; {hint}")
        problem = (_imagenet_problem if name == "imagenet" else _cc3m_problem)(split_dir)
        if problem:
            raise DrrError(f"{source}: data.root {root}: {problem}; {hint}")
