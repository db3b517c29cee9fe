"""Image-caption datasets: CC-3M as written by img2dataset ('cc3m'), and COCO captions ('coco').

Both give one item per image with label -1 and its caption; images get the natural-image
preprocessing of drr.data.transforms (shorter side to `resolution`, centre crop, RGB).

cc3m -- ``<data.root>/<split>/`` in either img2dataset output format:

* 'files': shard folders ``00000/, 00001/, ...`` holding ``<key>.jpg`` (or .jpeg/.png/.webp),
  ``<key>.txt`` (the caption) and ``<key>.json``; image files directly in the split folder are
  read too. Samples without an image file (failed downloads) are skipped.
* 'webdataset': uncompressed ``*.tar`` shards with the same members; the tars are indexed once
  (member offsets) and members are read by offset, no extraction.

A sample's key is its file name up to the first dot; samples are ordered by (shard, key). The
caption is the .txt content (stripped), else the "caption" field of the .json, else ''.

coco -- ``<data.root>/annotations/captions_<split>2017.json`` with images in
``<data.root>/<split>2017/`` (the official layout; ``captions_<split>.json`` / ``<split>/`` are
accepted too). Items are the images listed in the json, ordered by image id; images in the folder
that the json does not list are ignored. An image has ~5 captions: the item's caption is the one
with the lowest annotation id; all of them, ordered by annotation id, are in `all_captions`.
"""

from __future__ import annotations

import json
import os
import tarfile
from pathlib import Path

import torch

from drr.core.errors import DrrError
from drr.data import transforms
from drr.data.files import CAPTION_IMAGE_EXTENSIONS
from drr.data.imagenet import dataset_root, decode_image_bytes, load_image


def _split_key(name: str) -> tuple[str, str]:
    """'000000001.jpg' -> ('000000001', 'jpg'); webdataset keys end at the first dot of the name."""
    key, _, ext = name.partition(".")
    return key, ext.lower()


class _CaptionDataset(torch.utils.data.Dataset):
    num_classes = 0
    class_names: list = []

    def __len__(self) -> int:
        return len(self.keys)

    def _check(self, i: int) -> int:
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} images")
        return int(i) % len(self)

    def description(self) -> dict:
        return {"dataset": self.name, "split": self.split, "num_images": len(self),
                "resolution": self.resolution, "source": self.source,
                "preprocessing": self.preprocessing, "num_classes": 0}


class Img2Dataset(_CaptionDataset):
    """img2dataset output ('files' or 'webdataset' format) under ``<root>/<split>/``."""

    def __init__(self, data_cfg: dict, split: str):
        self.name = data_cfg.get("name") or "cc3m"
        self.split = split
        self.resolution = int(data_cfg["resolution"])
        root = dataset_root(data_cfg, "cc3m")
        split_dir = root / split
        if not split_dir.is_dir():
            raise DrrError(f"data.root {root}: split folder {split!r} not found")
        self.source = str(split_dir)
        with os.scandir(split_dir) as it:
            entries = sorted(it, key=lambda e: e.name)
        tars = [e for e in entries if e.is_file() and e.name.endswith(".tar")]
        shards = [e for e in entries if e.is_dir() and not e.name.startswith(".")]
        self.keys: list[str] = []
        # per sample: files format -> (image path, txt path | None, json path | None)
        #             webdataset   -> (tar path, (offset, size) image, txt | None, json | None, ext)
        self._samples: list[tuple] = []
        if tars:
            if shards:
                raise DrrError(f"{split_dir}: holds both .tar shards and shard folders; keep one "
                               f"img2dataset output format per split")
            self.format = "webdataset"
            for t in tars:
                self._index_tar(Path(t.path))
        else:
            self.format = "files"
            for folder in [split_dir] + [Path(s.path) for s in shards]:
                self._index_folder(folder, prefix="" if folder == split_dir else folder.name + "/")
        limit = data_cfg.get("max_images")
        if limit is not None:
            del self.keys[limit:], self._samples[limit:]
        if not self.keys:
            raise DrrError(f"{split_dir}: no img2dataset samples (shard folders 00000/ with "
                           f"<key>.jpg + <key>.txt, or .tar shards)")
        self.preprocessing = transforms.natural_description(self.resolution)

    def _index_folder(self, folder: Path, prefix: str) -> None:
        groups: dict[str, dict[str, str]] = {}
        with os.scandir(folder) as it:
            for e in it:
                if e.is_file():
                    key, ext = _split_key(e.name)
                    groups.setdefault(key, {})[ext] = e.path
        for key in sorted(groups):
            g = groups[key]
            img = next((g[x[1:]] for x in CAPTION_IMAGE_EXTENSIONS if x[1:] in g), None)
            if img is None:
                continue
            self.keys.append(prefix + key)
            self._samples.append((img, g.get("txt"), g.get("json")))

    def _index_tar(self, path: Path) -> None:
        groups: dict[str, dict[str, tuple[int, int]]] = {}
        try:
            with tarfile.open(path, "r:") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    d, _, base = m.name.rpartition("/")
                    key, ext = _split_key(base)
                    key = f"{d}/{key}" if d else key
                    groups.setdefault(key, {})[ext] = (m.offset_data, m.size)
        except (tarfile.TarError, OSError) as e:
            raise DrrError(f"{path}: cannot read tar shard ({e})") from None
        for key in sorted(groups):
            g = groups[key]
            ext = next((x[1:] for x in CAPTION_IMAGE_EXTENSIONS if x[1:] in g), None)
            if ext is None:
                continue
            self.keys.append(f"{path.stem}/{key}")
            self._samples.append((str(path), g[ext], g.get("txt"), g.get("json"), ext))

    @staticmethod
    def _read_member(tar_path: str, span: tuple[int, int]) -> bytes:
        with open(tar_path, "rb") as f:
            f.seek(span[0])
            data = f.read(span[1])
        if len(data) != span[1]:
            raise DrrError(f"{tar_path}: truncated at offset {span[0]}")
        return data

    def _caption_from(self, txt: bytes | None, js: bytes | None, where: str) -> str:
        if txt is not None:
            return txt.decode("utf-8", errors="replace").strip()
        if js is not None:
            try:
                cap = json.loads(js).get("caption")
            except (ValueError, AttributeError):
                raise DrrError(f"{where}: not valid JSON") from None
            return cap.strip() if isinstance(cap, str) else ""
        return ""

    def caption(self, i: int) -> str:
        i = self._check(i)
        s = self._samples[i]
        if self.format == "files":
            _, txt, js = s
            try:
                return self._caption_from(Path(txt).read_bytes() if txt else None,
                                          Path(js).read_bytes() if js and not txt else None,
                                          js or "")
            except OSError as e:
                raise DrrError(f"{txt or js}: cannot read caption ({e})") from None
        tar, _, txt, js, _ = s
        return self._caption_from(self._read_member(tar, txt) if txt else None,
                                  self._read_member(tar, js) if js and not txt else None,
                                  f"{tar}:{self.keys[i]}.json")

    def captions_for(self, i: int) -> list[str]:
        return [self.caption(i)]

    def __getitem__(self, i: int) -> dict:
        i = self._check(i)
        s = self._samples[i]
        if self.format == "files":
            image = load_image(s[0], self.resolution)
        else:
            tar, span, _, _, ext = s
            key = self.keys[i].split("/", 1)[1]
            image = decode_image_bytes(self._read_member(tar, span), self.resolution,
                                       f"{tar}:{key}.{ext}")
        return {"image": image, "index": i, "label": -1, "caption": self.caption(i)}

    def description(self) -> dict:
        return {**super().description(), "format": self.format}


class CocoCaptions(_CaptionDataset):
    """COCO captions: one item per image listed in the captions json, ordered by image id."""

    name = "coco"

    def __init__(self, data_cfg: dict, split: str):
        self.split = split
        self.resolution = int(data_cfg["resolution"])
        root = dataset_root(data_cfg, "coco")
        ann = self._first([root / "annotations" / f"captions_{split}2017.json",
                           root / "annotations" / f"captions_{split}.json",
                           root / f"captions_{split}2017.json"], "file")
        if ann is None:
            raise DrrError(f"data.root {root}: COCO captions file annotations/captions_{split}2017"
                           f".json not found")
        img_dir = self._first([root / f"{split}2017", root / split,
                               root / "images" / f"{split}2017"], "dir")
        if img_dir is None:
            raise DrrError(f"data.root {root}: COCO image folder {split}2017/ not found")
        self.annotation_file = str(ann)
        self.source = str(img_dir)
        try:
            with open(ann) as f:
                data = json.load(f)
            images = sorted(data["images"], key=lambda im: im["id"])
            anns = sorted(data["annotations"], key=lambda a: a["id"])
            by_image: dict[int, list[str]] = {}
            for a in anns:
                by_image.setdefault(a["image_id"], []).append(a["caption"].strip())
            names = [im["file_name"] for im in images]
            ids = [int(im["id"]) for im in images]
        except (ValueError, KeyError, TypeError, AttributeError) as e:
            raise DrrError(f"{ann}: not a COCO captions file ({type(e).__name__}: {e})") from None
        limit = data_cfg.get("max_images")
        if limit is not None:
            names, ids = names[:limit], ids[:limit]
        present = set(os.listdir(img_dir))
        missing = [n for n in names if n not in present]
        if missing:
            raise DrrError(f"{img_dir / missing[0]}: image listed in {ann.name} not found "
                           f"({len(missing)} missing)")
        if not names:
            raise DrrError(f"{ann}: lists no images")
        self.keys = [Path(n).stem for n in names]
        self.image_ids = ids
        self.files = [str(img_dir / n) for n in names]
        self.all_captions = [by_image.get(i, []) for i in ids]
        self.preprocessing = transforms.natural_description(self.resolution)

    @staticmethod
    def _first(candidates, kind):
        for c in candidates:
            if (c.is_file() if kind == "file" else c.is_dir()):
                return c
        return None

    def caption(self, i: int) -> str:
        caps = self.all_captions[self._check(i)]
        return caps[0] if caps else ""

    def captions_for(self, i: int) -> list[str]:
        return list(self.all_captions[self._check(i)])

    def __getitem__(self, i: int) -> dict:
        i = self._check(i)
        return {"image": load_image(self.files[i], self.resolution), "index": i, "label": -1,
                "caption": self.caption(i)}

    def description(self) -> dict:
        return {**super().description(), "annotation_file": self.annotation_file}
