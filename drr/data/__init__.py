"""Datasets: Fashion-MNIST (the embedded default), ImageNet class folders, image-caption sets.

`build_dataset(data_cfg, split)` returns a torch Dataset for the config's ``data`` section; every
item is a dict::

    {'image': torch.uint8 (3, R, R) RGB, 'index': int (stable position in the split),
     'label': int (class, -1 when none), 'caption': str ('' when none)}

and every dataset has ``num_classes`` (0 when none), ``class_names`` ([] when none), ``source``
(the folder read) and ``description()``. `collate` batches items for a DataLoader; `describe`
gives the JSON-able description stored as Parquet metadata. All preprocessing is deterministic
(drr.data.transforms); there is no augmentation.

    name           module                    splits             source
    fashion-mnist  drr.data.fashion_mnist    train, test        root | Debian package | download
    imagenet       drr.data.imagenet         train, val, ...    root/<split>/<wnid>/*.JPEG
    cc3m           drr.data.captions         train, val, ...    root/<split>/ img2dataset output
    coco           drr.data.captions         train, val         root/annotations + root/<split>2017
"""

from __future__ import annotations

from drr.core.errors import DrrError

DATASETS = ("fashion-mnist", "imagenet", "cc3m", "coco")


def _dataset_class(name: str):
    if name == "fashion-mnist":
        from drr.data.fashion_mnist import FashionMNIST
        return FashionMNIST
    if name == "imagenet":
        from drr.data.imagenet import ImageFolder
        return ImageFolder
    if name == "cc3m":
        from drr.data.captions import Img2Dataset
        return Img2Dataset
    if name == "coco":
        from drr.data.captions import CocoCaptions
        return CocoCaptions
    raise DrrError(f"data.name: unknown dataset {name!r} (known: {', '.join(DATASETS)})")


def build_dataset(data_cfg: dict, split: str, **kwargs) -> torch.utils.data.Dataset:
    """The dataset named by ``data_cfg['name']``, for `split` ('train', 'test', 'val', ...).

    kwargs go to the dataset class (e.g. Fashion-MNIST's ``verify=False`` for synthetic test files).
    """
    if not isinstance(split, str) or not split:
        raise DrrError(f"data split: expected a name such as 'train', got {split!r}")
    return _dataset_class(data_cfg.get("name", "fashion-mnist"))(data_cfg, split, **kwargs)


def describe(data_cfg: dict, split: str, dataset=None, **kwargs) -> dict:
    """JSON-able description: dataset, split, num_images, resolution, source, preprocessing, ...

    Pass `dataset` when it is already built to avoid indexing it again.
    """
    ds = dataset if dataset is not None else build_dataset(data_cfg, split, **kwargs)
    desc = ds.description()
    desc["max_images"] = data_cfg.get("max_images")
    return desc


def collate(batch: list[dict]) -> dict:
    """Stack items: image (B, 3, R, R) uint8, index and label int64 tensors, caption list[str]."""
    import torch  # here, not at the top: the workflow's data check imports this package

    if not batch:
        raise ValueError("collate: empty batch")
    return {
        "image": torch.stack([b["image"] for b in batch]),
        "index": torch.tensor([b["index"] for b in batch], dtype=torch.int64),
        "label": torch.tensor([b["label"] for b in batch], dtype=torch.int64),
        "caption": [b["caption"] for b in batch],
    }
