"""Dataset layer: Fashion-MNIST sources, download and integrity; ImageNet class folders; captions.

Tests marked `shared` read archives from <repo>/../shared/data (checked against its SHA256SUMS) and
skip when that folder is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from drr.core.errors import DrrError
from drr.core.files import sha256_file
from drr.data import build_dataset, collate, describe, fashion_mnist, transforms
from drr.data.download import download
from drr.data.imagenet import class_index, write_class_index

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"


def cfg(**kw) -> dict:
    base = dict(name="fashion-mnist", root=None, resolution=32, train_split="train",
                eval_split="test", max_images=None, download=False, cache_dir="unused")
    base.update(kw)
    return base


# --- shared archives ------------------------------------------------------------------------------

_checked: dict[str, Path] = {}


def shared_archive(name: str) -> Path:
    """Path of a shared archive, its sha256 checked against SHA256SUMS; skip when absent."""
    if name in _checked:
        return _checked[name]
    path = SHARED / name
    if not path.is_file():
        pytest.skip(f"{path} not found (shared test data lives in <repo>/../shared/data)")
    sums = {}
    sums_file = SHARED / "SHA256SUMS"
    if sums_file.is_file():
        for line in sums_file.read_text().splitlines():
            if line.strip():
                digest, fname = line.split(maxsplit=1)
                sums[fname.lstrip("*").strip()] = digest
    if name not in sums:
        pytest.fail(f"{sums_file}: no sum for {name}")
    got = sha256_file(path)
    if got != sums[name]:
        pytest.fail(f"{path}: sha256 {got} does not match SHA256SUMS ({sums[name]})")
    _checked[name] = path
    return path


@pytest.fixture(scope="session")
def imagenet_root(tmp_path_factory):
    """imagenet-sample.tar is flat (./<wnid>_<name>.JPEG, one per class): arrange into
    train/<wnid>/ and a small val/<wnid>/ (the first 5 classes)."""
    archive = shared_archive("imagenet-sample.tar")
    root = tmp_path_factory.mktemp("imagenet")
    raw = root / "raw"
    with tarfile.open(archive) as tf:
        tf.extractall(raw, filter="data")
    files = sorted(p for p in raw.iterdir() if p.suffix.lower() == ".jpeg")
    assert len(files) == 1000
    for i, p in enumerate(files):
        wnid = p.name.split("_", 1)[0]
        (root / "train" / wnid).mkdir(parents=True)
        os.link(p, root / "train" / wnid / p.name)
        if i < 5:
            (root / "val" / wnid).mkdir(parents=True)
            os.link(p, root / "val" / wnid / p.name)
    return root


@pytest.fixture(scope="session")
def coco_root(tmp_path_factory):
    archive = shared_archive("coco-mini.tar.gz")
    root = tmp_path_factory.mktemp("coco")
    with tarfile.open(archive) as tf:
        tf.extractall(root, filter="data")
    return root


@pytest.fixture(scope="session")
def cifar_root(tmp_path_factory):
    """The first 20 images of each class of cifar10-jpg's test split (test/<class>/NNNN.jpg);
    the test split comes first in the archive, so reading stops at train/."""
    archive = shared_archive("cifar10-jpg.tar.gz")
    root = tmp_path_factory.mktemp("cifar")
    with tarfile.open(archive) as tf:
        for m in tf:
            name = m.name.removeprefix("./")
            if name.startswith("train"):
                break
            parts = name.split("/")
            if m.isfile() and len(parts) == 3 and int(parts[2].split(".")[0]) < 20:
                tf.extract(m, root, filter="data")
    return root


# --- Fashion-MNIST --------------------------------------------------------------------------------

def idx_bytes(arr: np.ndarray, magic: int) -> bytes:
    return struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape) + \
        arr.astype(np.uint8).tobytes()


def write_fmnist(folder: Path, n: int = 12, seed: int = 0, gz: bool = True,
                 splits=("train", "test")):
    """Synthetic Fashion-MNIST files; returns {split: (images, labels)} and the content sums."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    data, sums = {}, {}
    for split in splits:
        img_name, lbl_name = fashion_mnist.SPLITS[split]
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, content in ((img_name, idx_bytes(images, 2051)),
                              (lbl_name, idx_bytes(labels, 2049))):
            if gz:
                (folder / f"{name}.gz").write_bytes(gzip.compress(content))
            else:
                (folder / name).write_bytes(content)
            sums[name] = (hashlib.sha256(content).hexdigest(), len(content))
        data[split] = (images, labels)
    return data, sums


@pytest.fixture
def no_debian(monkeypatch, tmp_path):
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", tmp_path / "no-debian")


@pytest.mark.skipif(not fashion_mnist.DEBIAN_DIR.is_dir(), reason="Debian package "
                    "dataset-fashion-mnist not installed (/usr/share/datasets/fashion-mnist)")
def test_fashion_mnist_debian():
    c = cfg()
    train, test = build_dataset(c, "train"), build_dataset(c, "test")
    assert (len(train), len(test)) == (60000, 10000)
    assert train.origin == "debian" and train.source == str(fashion_mnist.DEBIAN_DIR)
    assert train.num_classes == 10 and train.class_names[0] == "T-shirt/top"
    assert train.class_names[9] == "Ankle boot"
    for ds in (train, test):
        assert ds.labels.min() == 0 and ds.labels.max() == 9
        for i in (0, 1, len(ds) // 2, len(ds) - 1):
            item = ds[i]
            img = item["image"]
            assert img.shape == (3, 32, 32) and img.dtype == torch.uint8
            assert item["index"] == i and 0 <= item["label"] <= 9 and item["caption"] == ""
            assert torch.equal(img[0], img[1]) and torch.equal(img[0], img[2])
            border = torch.ones(32, 32, dtype=torch.bool)
            border[2:30, 2:30] = False
            assert int(img[:, border].max()) == 0
            assert np.array_equal(img[0, 2:30, 2:30].numpy(), ds.images[i])
    # well-known first labels of the canonical files
    assert train.labels[:3].tolist() == [9, 0, 0] and test.labels[:3].tolist() == [9, 2, 1]
    d = describe(c, "test", dataset=test)
    assert d["num_images"] == 10000 and d["preprocessing"].startswith("pad 28->32")
    json.dumps(d)
    small = build_dataset(cfg(max_images=7), "test")
    assert len(small) == 7 and np.array_equal(small.images, test.images[:7])


def test_download_file_url(tmp_path, monkeypatch, no_debian):
    served = tmp_path / "served"
    data, sums = write_fmnist(served)
    monkeypatch.setattr(fashion_mnist, "SHA256", sums)
    monkeypatch.setenv(fashion_mnist.URL_ENV, served.as_uri())
    c = cfg(download=True, cache_dir=str(tmp_path / "cache"))
    ds = build_dataset(c, "train")
    assert ds.origin == "download"
    cache = tmp_path / "cache" / "fashion-mnist"
    assert sorted(p.name for p in cache.iterdir()) == ["train-images-idx3-ubyte.gz",
                                                       "train-labels-idx1-ubyte.gz"]
    assert np.array_equal(ds.images, data["train"][0])
    assert np.array_equal(ds.labels, data["train"][1])
    assert ds[3]["label"] == int(data["train"][1][3])
    # a second build reads the cache, even with downloads off
    again = build_dataset(cfg(cache_dir=str(tmp_path / "cache")), "train")
    assert again.origin == "cache" and len(again) == 12
    # the url argument beats the environment variable
    test = build_dataset(c, "test", url=served.as_uri() + "/")
    assert len(test) == 12 and test.origin == "download"


def test_download_corrupt_rejected(tmp_path, monkeypatch, no_debian):
    served = tmp_path / "served"
    _, sums = write_fmnist(served, splits=("test",))
    bad = "0" * 64
    sums["t10k-labels-idx1-ubyte"] = (bad, sums["t10k-labels-idx1-ubyte"][1])
    monkeypatch.setattr(fashion_mnist, "SHA256", sums)
    monkeypatch.setenv(fashion_mnist.URL_ENV, served.as_uri())
    cache = tmp_path / "cache"
    with pytest.raises(DrrError) as e:
        build_dataset(cfg(download=True, cache_dir=str(cache)), "test")
    msg = str(e.value)
    real = hashlib.sha256(gzip.decompress((served / "t10k-labels-idx1-ubyte.gz").read_bytes()))
    assert "t10k-labels-idx1-ubyte" in msg and bad in msg and real.hexdigest() in msg
    # the good file may stay; the bad one and any temporary are gone
    left = sorted(p.name for p in (cache / "fashion-mnist").iterdir())
    assert left == ["t10k-images-idx3-ubyte.gz"]


def test_download_function(tmp_path):
    src = tmp_path / "blob.bin"
    src.write_bytes(b"x" * 1000)
    good = hashlib.sha256(b"x" * 1000).hexdigest()
    out = download(src.as_uri(), tmp_path / "dl" / "blob.bin", sha256=good)
    assert out.read_bytes() == b"x" * 1000
    with pytest.raises(DrrError, match="sha256 mismatch"):
        download(src.as_uri(), tmp_path / "dl2" / "blob.bin", sha256="1" * 64)
    assert list((tmp_path / "dl2").iterdir()) == []
    with pytest.raises(DrrError, match="download failed"):
        download((tmp_path / "missing").as_uri(), tmp_path / "dl3" / "x")


def test_no_source_explains_options(tmp_path, no_debian):
    with pytest.raises(DrrError) as e:
        build_dataset(cfg(cache_dir=str(tmp_path / "cache")), "train")
    msg = str(e.value)
    assert "data.root" in msg and "dataset-fashion-mnist" in msg and "data.download" in msg
    with pytest.raises(DrrError, match="splits"):
        build_dataset(cfg(root=str(tmp_path)), "val")


def test_root_missing_file(tmp_path):
    write_fmnist(tmp_path / "fm")
    (tmp_path / "fm" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(DrrError) as e:
        build_dataset(cfg(root=str(tmp_path / "fm")), "test")
    assert str(tmp_path / "fm") in str(e.value) and "t10k-labels-idx1-ubyte" in str(e.value)


def test_root_beats_debian_and_is_verified(tmp_path, monkeypatch):
    # a Debian folder with (synthetic) files of its own: root must still win
    deb = tmp_path / "debian"
    write_fmnist(deb, n=5, seed=1)
    monkeypatch.setattr(fashion_mnist, "DEBIAN_DIR", deb)
    data, sums = write_fmnist(tmp_path / "root", n=9, gz=False)  # uncompressed IDX accepted
    c = cfg(root=str(tmp_path / "root"))
    ds = build_dataset(c, "train", verify=False)
    assert ds.origin == "root" and len(ds) == 9 and np.array_equal(ds.images, data["train"][0])
    # with verification on, the synthetic root files fail the canonical sums, naming the file
    with pytest.raises(DrrError) as e:
        build_dataset(c, "train")
    assert "train-images-idx3-ubyte" in str(e.value) and fashion_mnist.SHA256[
        "train-images-idx3-ubyte"][0] in str(e.value)
    # ... and pass when the table holds their sums
    monkeypatch.setattr(fashion_mnist, "SHA256", sums)
    assert len(build_dataset(c, "test")) == 9
    # without root, the Debian folder is used
    assert build_dataset(cfg(), "test", verify=False).origin == "debian"


def test_idx_header_checked(tmp_path):
    fm = tmp_path / "fm"
    write_fmnist(fm)
    bad = idx_bytes(np.zeros((3, 28, 28), np.uint8), 2049)
    (fm / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(bad))
    with pytest.raises(DrrError, match="t10k-images-idx3-ubyte.gz: IDX magic number 2049"):
        build_dataset(cfg(root=str(fm)), "test", verify=False)
    (fm / "t10k-images-idx3-ubyte.gz").write_bytes(gzip.compress(idx_bytes(
        np.zeros((3, 20, 20), np.uint8), 2051)))
    with pytest.raises(DrrError, match="20x20"):
        build_dataset(cfg(root=str(fm)), "test", verify=False)


@pytest.mark.parametrize("res,kind", [(28, "none"), (36, "pad"), (31, "resize"), (16, "resize")])
def test_fashion_mnist_resolutions(tmp_path, res, kind):
    data, _ = write_fmnist(tmp_path / "fm", n=4)
    ds = build_dataset(cfg(root=str(tmp_path / "fm"), resolution=res), "test", verify=False)
    img = ds[1]["image"]
    assert img.shape == (3, res, res) and img.dtype == torch.uint8
    assert torch.equal(img[0], img[2])
    raw = data["test"][0][1]
    assert ds.preprocessing.split()[0] == kind
    if kind == "pad":
        assert np.array_equal(img[0, 4:32, 4:32].numpy(), raw) and int(img[0, :4].max()) == 0
    elif kind == "none":
        assert np.array_equal(img[0].numpy(), raw)
    else:
        want = np.asarray(Image.fromarray(raw, "L").resize((res, res), Image.Resampling.BICUBIC))
        assert np.array_equal(img[0].numpy(), want)


def test_collate_and_unknown_name(tmp_path):
    write_fmnist(tmp_path / "fm", n=4)
    ds = build_dataset(cfg(root=str(tmp_path / "fm")), "train", verify=False)
    b = collate([ds[0], ds[3]])
    assert b["image"].shape == (2, 3, 32, 32) and b["image"].dtype == torch.uint8
    assert b["index"].tolist() == [0, 3] and b["label"].dtype == torch.int64
    assert b["caption"] == ["", ""]
    loader = torch.utils.data.DataLoader(ds, batch_size=3, collate_fn=collate)
    assert [x["image"].shape[0] for x in loader] == [3, 1]
    with pytest.raises(DrrError, match="unknown dataset"):
        build_dataset(cfg(name="mnist"), "train")
    with pytest.raises(IndexError):
        ds[4]


# --- natural images -------------------------------------------------------------------------------

def test_resize_center_crop_convention():
    # 400x200 -> box halving (shorter side 200 >= 2*100) to 200x100 -> no resize -> crop x 50..150
    rng = np.random.default_rng(0)
    arr = rng.integers(0, 256, (200, 400, 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    out = transforms.resize_center_crop(img, 100)
    half = np.asarray(img.resize((200, 100), Image.Resampling.BOX))
    assert out.shape == (100, 100, 3) and np.array_equal(out, half[:, 50:150])
    # small images are enlarged with bicubic: 30x20 -> 45x30 -> crop x 7..37
    small = Image.fromarray(arr[:20, :30])
    out = transforms.resize_center_crop(small, 30)
    big = np.asarray(small.resize((45, 30), Image.Resampling.BICUBIC))
    assert np.array_equal(out, big[:, 7:37])


def jpeg(path: Path, mode: str, size=(80, 60), seed=0, fmt="JPEG"):
    rng = np.random.default_rng(seed)
    arr = rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)
    img = Image.fromarray(arr)
    img = img.convert(mode) if mode != "P" else img.quantize(16)
    path.parent.mkdir(parents=True, exist_ok=True)
    img.save(path, fmt)
    return path


def test_image_modes_and_corrupt_files(tmp_path):
    root = tmp_path / "inet"
    for split in ("train", "val"):
        jpeg(root / split / "n001" / "gray.JPEG", "L")
        jpeg(root / split / "n002" / "cmyk.jpg", "CMYK", seed=1)
        jpeg(root / split / "n003" / "pal.png", "P", seed=2, fmt="PNG")
        jpeg(root / split / "n004" / "rgba.PNG", "RGBA", seed=3, fmt="PNG")
    Image.fromarray(np.full((40, 50), 40000, np.uint16)).save(root / "train" / "n004" / "z16.png")
    (root / "train" / "n004" / "notes.txt").write_text("ignored")
    c = cfg(name="imagenet", root=str(root), resolution=24)
    ds = build_dataset(c, "train")
    assert ds.class_names == ["n001", "n002", "n003", "n004"] and ds.num_classes == 4
    assert [Path(f).name for f in ds.files] == ["gray.JPEG", "cmyk.jpg", "pal.png", "rgba.PNG",
                                               "z16.png"]
    assert ds.labels == [0, 1, 2, 3, 3]
    items = [ds[i] for i in range(len(ds))]
    for it in items:
        assert it["image"].shape == (3, 24, 24) and it["image"].dtype == torch.uint8
    g = items[0]["image"]
    assert torch.equal(g[0], g[1]) and torch.equal(g[1], g[2])
    with Image.open(ds.files[1]) as im:
        assert im.mode == "CMYK"
        want = transforms.resize_center_crop(im.convert("RGB"), 24)
    assert np.array_equal(items[1]["image"].permute(1, 2, 0).numpy(), want)
    assert int(items[4]["image"].float().mean().round()) == round(40000 / 257)
    # corrupt: truncated JPEG, and a non-image with an image name
    good = (root / "train" / "n001" / "gray.JPEG").read_bytes()
    (root / "train" / "n001" / "trunc.jpeg").write_bytes(good[: len(good) // 3])
    (root / "train" / "n002" / "junk.jpg").write_bytes(b"not an image at all")
    ds = build_dataset(c, "train")
    for name in ("trunc.jpeg", "junk.jpg"):
        i = [Path(f).name for f in ds.files].index(name)
        with pytest.raises(DrrError) as e:
            ds[i]
        assert str(Path(ds.files[i])) in str(e.value)
    # val: unknown class folder, flat images
    jpeg(root / "val" / "n999" / "x.jpg", "RGB")
    with pytest.raises(DrrError, match="'n999'"):
        build_dataset(c, "val")
    jpeg(root / "flat" / "x.jpg", "RGB")
    with pytest.raises(DrrError, match="class folders"):
        build_dataset(c, "flat")
    with pytest.raises(DrrError, match="data.root"):
        build_dataset(cfg(name="imagenet", resolution=24), "train")


@pytest.mark.shared
def test_imagenet_sample(imagenet_root, tmp_path):
    c = cfg(name="imagenet", root=str(imagenet_root), resolution=256, eval_split="val")
    wnids = class_index(c)
    assert len(wnids) == 1000 and wnids == sorted(wnids) and wnids[0] == "n01440764"
    idx = write_class_index(c, tmp_path / "classes.json")
    assert json.loads((tmp_path / "classes.json").read_text()) == idx == \
        {"wnids": wnids, "num_classes": 1000}
    ds = build_dataset(c, "train")
    assert len(ds) == 1000 and ds.num_classes == 1000
    assert ds.files == build_dataset(c, "train").files  # stable order
    for i in (0, 1, 500, 999):
        item = ds[i]
        assert item["image"].shape == (3, 256, 256) and item["image"].dtype == torch.uint8
        assert ds.class_names[item["label"]] == Path(ds.files[i]).name.split("_")[0]
        assert item["index"] == i
    # a real grayscale JPEG of the sample comes out RGB
    gray = next(i for i, f in enumerate(ds.files) if Image.open(f).mode == "L")
    g = ds[gray]["image"]
    assert torch.equal(g[0], g[1]) and torch.equal(g[0], g[2])
    val = build_dataset(c, "val")
    assert len(val) == 5 and [val[i]["label"] for i in range(5)] == [0, 1, 2, 3, 4]
    assert len(build_dataset({**c, "max_images": 10}, "train")) == 10
    d = describe(c, "val", dataset=val)
    assert d["num_images"] == 5 and d["preprocessing"].startswith("resize shorter side to 256")


@pytest.mark.shared
def test_cifar_jpeg_folders(cifar_root):
    # CIFAR-10 as JPEG class folders; the class index taken from its test split
    c = cfg(name="imagenet", root=str(cifar_root), resolution=32, train_split="test")
    ds = build_dataset(c, "test")
    assert ds.class_names[:3] == ["airplane", "automobile", "bird"] and len(ds) == 200
    item = ds[25]
    assert ds.class_names[item["label"]] == "automobile"
    with Image.open(ds.files[25]) as im:  # 32x32 at resolution 32: pixels unchanged
        raw = np.asarray(im.convert("RGB"))
    assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), raw)
    assert ds[25]["image"].shape == (3, 32, 32)
    assert build_dataset({**c, "resolution": 64}, "test")[0]["image"].shape == (3, 64, 64)


# --- image-caption sets ---------------------------------------------------------------------------

@pytest.mark.shared
def test_coco_mini(coco_root):
    c = cfg(name="coco", root=str(coco_root), resolution=64, train_split="train", eval_split="val")
    ann = json.loads((coco_root / "annotations" / "captions_val2017.json").read_text())
    val = build_dataset(c, "val")
    assert len(val) == len(ann["images"]) == 79  # unlisted files in val2017/ are ignored
    assert val.image_ids == sorted(im["id"] for im in ann["images"])
    first = {}
    for a in sorted(ann["annotations"], key=lambda a: a["id"]):
        first.setdefault(a["image_id"], a["caption"].strip())
    for i in (0, 40, 78):
        item = val[i]
        assert item["caption"] == first[val.image_ids[i]] and item["label"] == -1
        assert item["image"].shape == (3, 64, 64) and item["index"] == i
        assert len(val.all_captions[i]) == 5 and val.all_captions[i][0] == item["caption"]
    assert val.num_classes == 0 and val.class_names == []
    assert len(build_dataset(c, "train")) == 80
    d = describe(c, "val", dataset=val)
    assert d["dataset"] == "coco" and d["num_images"] == 79 and d["source"].endswith("val2017")
    with pytest.raises(DrrError, match="captions_test2017"):
        build_dataset(c, "test")


def write_img2dataset_files(split_dir: Path, n_shards=2, per_shard=3):
    """img2dataset 'files' output: 00000/000000000.{jpg,txt,json}, plus parquet/stats at top."""
    samples = []
    for s in range(n_shards):
        shard = split_dir / f"{s:05d}"
        shard.mkdir(parents=True)
        (split_dir / f"{s:05d}.parquet").write_bytes(b"PAR1")
        (split_dir / f"{s:05d}_stats.json").write_text("{}")
        for j in range(per_shard):
            key = f"{s * 10 + j:09d}"
            caption = f"a photo number {s}-{j}"
            jpeg(shard / f"{key}.jpg", "RGB", size=(70 + j * 10, 50), seed=s * 10 + j)
            (shard / f"{key}.txt").write_text(caption)
            (shard / f"{key}.json").write_text(json.dumps({"key": key, "caption": caption}))
            samples.append((f"{s:05d}/{key}", caption))
        # a failed download: json only
        (shard / f"{s * 10 + 9:09d}.json").write_text(json.dumps({"status": "failed"}))
    return samples


def test_cc3m_files_and_webdataset(tmp_path):
    files_root = tmp_path / "files"
    samples = write_img2dataset_files(files_root / "train")
    c = cfg(name="cc3m", root=str(files_root), resolution=32)
    ds = build_dataset(c, "train")
    assert ds.format == "files" and len(ds) == 6 and ds.keys == [k for k, _ in samples]
    items = [ds[i] for i in range(len(ds))]
    assert [it["caption"] for it in items] == [cap for _, cap in samples]
    assert all(it["label"] == -1 and it["image"].shape == (3, 32, 32) for it in items)
    assert ds.num_classes == 0 and ds.class_names == [] and ds.captions_for(2) == [samples[2][1]]

    # webdataset: the same members in .tar shards
    wds = tmp_path / "wds" / "train"
    wds.mkdir(parents=True)
    for s in range(2):
        with tarfile.open(wds / f"{s:05d}.tar", "w") as tf:
            for p in sorted((files_root / "train" / f"{s:05d}").iterdir()):
                tf.add(p, arcname=p.name)
    (wds / "00000_stats.json").write_text("{}")
    wd = build_dataset(cfg(name="cc3m", root=str(tmp_path / "wds"), resolution=32), "train")
    assert wd.format == "webdataset" and len(wd) == 6
    assert wd.keys == ds.keys
    for i, it in enumerate(items):
        w = wd[i]
        assert w["caption"] == it["caption"] and torch.equal(w["image"], it["image"])
    d = describe(c, "train", dataset=wd)
    assert d["format"] == "webdataset" and d["num_images"] == 6
    assert len(build_dataset({**c, "max_images": 4}, "train")) == 4

    # caption from the json when the .txt is absent; a corrupt image names its file
    (files_root / "train" / "00001" / "000000010.txt").unlink()
    (files_root / "train" / "00001" / "000000011.jpg").write_bytes(b"garbage")
    ds = build_dataset(c, "train")
    assert ds[3]["caption"] == "a photo number 1-0"
    with pytest.raises(DrrError, match="000000011.jpg"):
        ds[4]
    bad = tmp_path / "badwds" / "train"
    bad.mkdir(parents=True)
    with tarfile.open(bad / "00000.tar", "w") as tf:
        info = tarfile.TarInfo("000000005.jpg")
        info.size = 7
        tf.addfile(info, io.BytesIO(b"garbage"))
    wd = build_dataset(cfg(name="cc3m", root=str(tmp_path / "badwds"), resolution=32), "train")
    assert wd.caption(0) == ""
    with pytest.raises(DrrError, match="00000.tar:000000005.jpg"):
        wd[0]
    with pytest.raises(DrrError, match="'val' not found"):
        build_dataset(c, "val")
