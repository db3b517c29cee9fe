"""Generate samples with Draft-and-Revise (paper §3.3, Algorithm 2), or in raster order for an
autoregressive RQ-Transformer (`transformer.model.kind: ar`, settings `sampling.ar`,
drr/sampling/ar.py), in resumable shards, then merge them into one ``samples.npz`` in the ADM
evaluator's format.

    python -m drr.sampling.generate --config configs/experiments/tiny.yaml [--config ablation.yaml] \
        [--set generation.num_samples=100] \
        --tokenizer results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt \
        --transformer results/transformers/tiny/checkpoint.pt \
        --out results/samples/tiny [--shard I | --merge-only] [--precision fp32|bf16] \
        [--device auto|cuda|cpu] \
        [--text-tokenizer bpe.json --captions EVAL_CODE_MAP_DIR]   # text-conditional models

The transformer samples on the config's `device` (drr.core.device: 'cuda' stops with one line when
there is no GPU) in `sampling.precision` (fp32, with TF32 matmuls on a GPU, or bf16 autocast;
drr.sampling.sampler.precision); `--device` and `--precision` override them. The merge runs on the
CPU.

Samples first_index..first_index+num_samples-1 (``generation.first_index``, 0 by default) are cut
into shards of ``generation.shard_size``; shard i goes to
``OUT/shards/shard-{i:05d}.npz`` (temporary name, fsync, rename, so a killed job never leaves a
file that looks finished). ``--shard I`` makes only shard I (one SLURM array task per shard);
without it every missing shard is made, then merged. A rerun skips finished shards after checking
they were made with the same config (hash of the `samples` stage of drr.workflow.plan: the part of the
resolved config that can change a shard; not generation.batch_size), transformer and tokenizer
sha256 and conditions; a shard made otherwise is refused with a one-line error naming the file.

Sample i is a pure function of (seed, i): its condition (class i % num_classes, or caption
i % n of the eval code map) and its decoding seed ``sample_seeds(seed, [i])``, so the samples do
not depend on the batch size, the shard size or how many jobs made them.

The merge (``--merge-only`` to run only it) streams the shards into ``OUT/samples.npz`` one shard
at a time (uint8 only; never all samples in memory):

    arr_0    uint8 (N, R, R, 3)       the images (the ADM evaluator reads this key)
    index    int64 (N,)               global sample indices
    labels   int64 (N,)               class conditions (class-conditional models)
    captions str   (N,)               captions (text-conditional models)
    codes    int16 (N, H, W, D)       the generated code maps
    drafts   uint8 (N, R, R, 3)       the draft images (generation.save_drafts)

and writes ``OUT/samples.json`` (provenance: config hashes, transformer / tokenizer sha256, seed,
decode settings, wall time, device), ``OUT/grid.png`` (the first generation.grid_samples samples)
and, with drafts, ``OUT/drafts-grid.png``; all atomically, samples.json last.
"""

from __future__ import annotations

import contextlib
import json
import os
import time
import zipfile
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.files import atomic_path
from drr.core.lock import hold
from drr.core.progress import log

SHARD_FORMAT = 1



def shard_config(cfg: dict) -> dict:
    """The part of the resolved config that can change a shard's samples (drr.workflow.plan, stage samples)."""
    from drr.core.stages import stage_config
    return stage_config(cfg, "samples")


def shard_config_hash(cfg: dict) -> str:
    from drr.core.stages import stage_hash
    return stage_hash(cfg, "samples")


def config_difference(old: dict | None, new: dict) -> str:
    """' (first difference: key a.b is X there, Y here)' or '' if unknown. A key that a stage
    config leaves out at its value from before it existed (drr.core.stages.ADDED_KEYS) reads as
    that value."""
    from drr.core.config import first_differing, flatten
    from drr.core.stages import ADDED_KEYS

    if not isinstance(old, dict):
        return ""
    diff = first_differing({**ADDED_KEYS, **flatten(old)}, {**ADDED_KEYS, **flatten(new)})
    return "" if diff is None else f" (first difference: {diff[0]} is {diff[1]!r} there, {diff[2]!r} here)"


def shard_path(out: Path, i: int) -> Path:
    from drr.core.stages import SHARD_NAME
    return Path(out) / "shards" / SHARD_NAME.format(i)


def shard_range(cfg: dict, i: int) -> tuple[int, int]:
    """[start, stop) of the sample indices of shard i: the run's samples are indices
    generation.first_index .. first_index + num_samples - 1."""
    n, size = cfg["generation"]["num_samples"], cfg["generation"]["shard_size"]
    first = cfg["generation"]["first_index"]
    return first + i * size, first + min((i + 1) * size, n)


def num_shards(cfg: dict) -> int:
    n, size = cfg["generation"]["num_samples"], cfg["generation"]["shard_size"]
    return -(-n // size)


def _sha(array: np.ndarray) -> str:
    import hashlib
    return hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()[:16]


def shard_identity(cfg: dict, models, conds, i: int) -> dict:
    """What a finished shard i must have been made with to be reused."""
    start, stop = shard_range(cfg, i)
    return {"format": SHARD_FORMAT, "config_hash": shard_config_hash(cfg),
            "transformer_sha256": models.transformer_sha256,
            "tokenizer_sha256": models.tokenizer_sha256,
            "conditions_sha256": _sha(conds(np.arange(start, stop)).numpy()),
            "start": start, "stop": stop, "save_drafts": bool(cfg["generation"]["save_drafts"]),
            "precision": cfg["sampling"]["precision"]}


def read_shard_meta(path: Path) -> dict | None:
    """The 'meta' record of a finished shard file; None if the file is unreadable."""
    try:
        with np.load(path) as z:
            meta = json.loads(str(z["meta"]))
            missing = {"images", "index", "codes"} - set(z.files)
            if missing:
                return None
            return meta
    except Exception:  # a damaged file: zipfile, ValueError, KeyError, EOFError, OSError...
        return None


def shard_done(path: Path, identity: dict, cfg: dict | None = None) -> bool:
    """True if `path` is a finished shard made with `identity`; False if absent or unreadable
    (it is remade); a shard made with another config or model raises a one-line DrrError (naming the
    first differing config key when `cfg`, the shard config of this run, is given)."""
    if not path.exists():
        return False
    meta = read_shard_meta(path)
    if meta is None:
        log(f"{path}: unreadable shard, making it again")
        return False
    for key, want in identity.items():
        if meta.get(key) != want:
            why = config_difference(meta.get("config"), cfg) if key == "config_hash" and cfg else ""
            raise DrrError(f"{path}: field '{key}' is {meta.get(key)!r}, this run has {want!r}"
                           f"{why}; the shard was made with another config, model, conditions "
                           f"or precision: use another --out or delete the shard")
    return True


def write_npz(path: Path, **arrays) -> None:
    """np.savez to `path` atomically (temporary name, fsync, rename)."""
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())


def make_shard(cfg: dict, models, conds, settings, i: int, out: Path, device: torch.device,
               progress) -> None:
    from drr.core.device import device_name, sync
    from drr.sampling.decode import sample_seeds
    from drr.sampling.images import decode_images
    from drr.sampling.sampler import precision, sample_codes

    gen = cfg["generation"]
    start, stop = shard_range(cfg, i)
    save_drafts = bool(gen["save_drafts"])
    model, tok = models.transformer, models.tokenizer
    h, w, d = models.code_shape
    images, drafts, codes_all = [], [], []
    t0 = time.monotonic()
    for b0 in range(start, stop, gen["batch_size"]):
        idx = np.arange(b0, min(b0 + gen["batch_size"], stop))
        cond = conds(idx).to(device)
        seeds = sample_seeds(cfg["seed"], idx)
        with precision(cfg, device):
            codes, draft = sample_codes(model, cond, settings, seeds)  # draft: None for AR
        images.append(decode_images(tok, codes, (h, w, d)))
        if save_drafts:
            drafts.append(decode_images(tok, draft, (h, w, d)))
        codes_all.append(codes.reshape(len(idx), h, w, d).to(torch.int16).cpu().numpy())
        progress.update(len(idx))
    sync(device)
    index = np.arange(start, stop, dtype=np.int64)
    meta = shard_identity(cfg, models, conds, i)
    meta.update(config=shard_config(cfg), wall_s=time.monotonic() - t0,
                device=device_name(device), batch_size=gen["batch_size"])
    arrays = {"images": np.concatenate(images), "index": index,
              "codes": np.concatenate(codes_all), "meta": np.array(json.dumps(meta))}
    if save_drafts:
        arrays["drafts"] = np.concatenate(drafts)
    labels, captions = conds.labels(index), conds.caption_texts(index)
    if labels is not None:
        arrays["labels"] = labels
    if captions is not None:
        arrays["captions"] = captions
    write_npz(shard_path(out, i), **arrays)


# -- merge ------------------------------------------------------------------------------------

class _NpzStream:
    """Write an .npz (a zip of .npy members, uncompressed, like np.savez) member by member, each
    member from chunks, so large arrays never need to be in memory at once."""

    def __init__(self, f):
        self.zf = zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED, allowZip64=True)

    def array(self, name: str, dtype, shape: tuple, chunks) -> None:
        dtype = np.dtype(dtype)
        written = 0
        with self.zf.open(f"{name}.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, {
                "descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False,
                "shape": tuple(int(s) for s in shape)})
            for chunk in chunks:
                chunk = np.ascontiguousarray(chunk, dtype=dtype)
                member.write(chunk.tobytes())
                written += chunk.size
        if written != int(np.prod(shape)):
            raise RuntimeError(f"{name}: wrote {written} values for shape {shape}")

    def close(self):
        self.zf.close()


def _shard_arrays(paths: list[Path], key: str):
    for p in paths:
        with np.load(p) as z:
            yield z[key]


def merge(cfg: dict, out: Path, models, conds, settings) -> Path:
    from drr.core.files import write_json
    from drr.core.provenance import provenance
    from drr.sampling.grid import grid_columns, save_grid

    gen = cfg["generation"]
    n, shards = gen["num_samples"], num_shards(cfg)
    paths = [shard_path(out, i) for i in range(shards)]
    missing = [p for p in paths if not p.exists()]
    if missing:
        raise DrrError(f"{missing[0]}: {len(missing)} of {shards} shards are missing; run without "
                       f"--merge-only (or the --shard jobs) first")
    metas = []
    for i, p in enumerate(paths):
        meta = read_shard_meta(p)
        if meta is None:
            raise DrrError(f"{p}: unreadable shard; run without --merge-only to remake it")
        shard_done(p, shard_identity(cfg, models, conds, i), shard_config(cfg))
        metas.append(meta)
    with np.load(paths[0]) as z:
        res = z["images"].shape[1:]
        code_shape = z["codes"].shape[1:]
        caption_dtype = None
    if conds.type == "text":
        caption_dtype = max((a.dtype for a in _shard_arrays(paths, "captions")),
                            key=lambda t: t.itemsize)
    k = min(gen["grid_samples"], n)
    grid, draft_grid = [], []

    def images(key: str, keep: list):
        taken = 0
        for arr in _shard_arrays(paths, key):
            if arr.shape[1:] != res:
                raise DrrError(f"shards of {out}: image shapes {arr.shape[1:]} and {res} differ")
            if taken < k:
                keep.append(arr[:k - taken].copy())
                taken += len(keep[-1])
            yield arr

    npz = out / "samples.npz"
    with atomic_path(npz) as tmp:
        # closing(): a failed write (a full disk) ends the zip before its file is closed
        with open(tmp, "wb") as f, contextlib.closing(_NpzStream(f)) as z:
            z.array("arr_0", np.uint8, (n, *res), images("images", grid))
            z.array("index", np.int64, (n,), _shard_arrays(paths, "index"))
            if conds.type == "class":
                z.array("labels", np.int64, (n,), _shard_arrays(paths, "labels"))
            if conds.type == "text":
                z.array("captions", caption_dtype, (n,), _shard_arrays(paths, "captions"))
            z.array("codes", np.int16, (n, *code_shape), _shard_arrays(paths, "codes"))
            if gen["save_drafts"]:
                z.array("drafts", np.uint8, (n, *res), images("drafts", draft_grid))
            z.close()
            f.flush()
            os.fsync(f.fileno())
    if k > 0:
        save_grid(np.concatenate(grid), out / "grid.png", grid_columns(k))
        if gen["save_drafts"]:
            save_grid(np.concatenate(draft_grid), out / "drafts-grid.png", grid_columns(k))
    record = provenance(
        cfg, shard_config_hash=shard_config_hash(cfg),
        transformer=str(models.transformer_path), transformer_sha256=models.transformer_sha256,
        tokenizer=str(models.tokenizer_path), tokenizer_sha256=models.tokenizer_sha256,
        decode_settings=asdict(settings), generation=gen, conditions=conds.source,
        num_samples=n, image_shape=list(res), shards=shards,
        precision=cfg["sampling"]["precision"],
        wall_s=sum(m["wall_s"] for m in metas),
        devices=sorted({m["device"] for m in metas}),
        files={"samples": npz.name, "grid": "grid.png" if k else None,
               "drafts_grid": "drafts-grid.png" if k and gen["save_drafts"] else None})
    write_json(out / "samples.json", record)
    return npz


# -- the run ----------------------------------------------------------------------------------

def generate(cfg: dict, tokenizer: Path, transformer: Path, out: Path, shard: int | None = None,
             merge_only: bool = False, caption_bpe: Path | None = None,
             captions: Path | None = None, precision: str | None = None,
             device: str | None = None) -> Path | None:
    """Make the missing shards (only shard `shard` if given), then merge (unless `shard`).
    Returns the samples.npz path after a merge, else None. precision: sets `sampling.precision`
    (None: the config's); device: the --device option (None: the config's `device`)."""
    from drr.core.config import save_config
    from drr.core.device import device_name, job_device
    from drr.core.progress import Progress
    from drr.sampling import sampler
    from drr.sampling.conditions import Conditions
    from drr.sampling.models import load_models

    out = Path(out)
    if os.path.lexists(out) and not out.is_dir():
        raise DrrError(f"{out}: is a file; --out names the folder of the samples")
    gen = cfg["generation"]
    shards = num_shards(cfg)
    if shard is not None and not 0 <= shard < shards:
        raise DrrError(f"--shard {shard}: generation.num_samples {gen['num_samples']} in shards of "
                       f"{gen['shard_size']} makes shards 0..{shards - 1}")
    if shard is not None and merge_only:
        raise DrrError("--shard and --merge-only exclude each other")
    cfg = sampler.with_precision(cfg, precision)
    dev = torch.device("cpu") if merge_only else job_device(cfg, device)  # a merge needs no GPU
    sampler.precision(cfg, dev)  # checks the setting before the models load
    settings = sampler.sampling_settings(cfg)  # DecodeSettings, or ARSettings for kind ar
    sampler.check_generation(cfg)
    models = load_models(tokenizer, transformer, dev, cfg)
    sampler.check_positions(settings, models.transformer.config.num_positions)
    conds = Conditions(cfg, caption_bpe, captions)
    out.mkdir(parents=True, exist_ok=True)
    save_config(cfg, out / "config.yaml")

    if not merge_only:
        todo = [shard] if shard is not None else list(range(shards))
        pending = [i for i in todo if not shard_done(
            shard_path(out, i), shard_identity(cfg, models, conds, i), shard_config(cfg))]
        skipped = len(todo) - len(pending)
        if skipped:
            log(f"{out}: {skipped} finished shard(s) kept")
        total = sum(shard_range(cfg, i)[1] - shard_range(cfg, i)[0] for i in pending)
        if pending:
            log(f"generating {total} samples in {len(pending)} shard(s) on {device_name(dev)}, "
                f"batch {gen['batch_size']}, {cfg['sampling']['precision']}")
        progress = Progress(int(total), "generate", unit="img")
        for i in pending:
            make_shard(cfg, models, conds, settings, i, out, dev, progress)
    if shard is not None:
        return None
    npz = merge(cfg, out, models, conds, settings)
    for stale in (out / "shards").glob(".shard-*.tmp"):  # left by killed jobs; every shard is done
        stale.unlink(missing_ok=True)
    log(f"wrote {npz} ({gen['num_samples']} samples)")
    return npz


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer checkpoint (drr format)")
    p.add_argument("--transformer", required=True, type=Path, help="transformer checkpoint")
    p.add_argument("--out", required=True, type=Path, help="output folder")
    p.add_argument("--shard", type=int, help="make only this shard (no merge)")
    p.add_argument("--merge-only", action="store_true", help="only merge the finished shards")
    p.add_argument("--text-tokenizer", dest="caption_bpe", type=Path,
                   help="the caption BPE's JSON (drr.text.bpe; text-conditional models)")
    p.add_argument("--captions", type=Path, help="eval code map whose captions condition samples")
    p.add_argument("--precision", choices=("fp32", "bf16"),
                   help="transformer precision, as --set sampling.precision=... (default: the "
                        "config's); the tokenizer decodes in fp32")
    p.add_argument("--device", help="auto | cuda | cuda:N | cpu (default: the config's `device`)")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        part = "samples" if args.shard is None else f"shard-{args.shard}"
        with hold(args.out.parent, f"{args.out.name}.{part}"):
            generate(cfg, args.tokenizer, args.transformer, args.out, shard=args.shard,
                     merge_only=args.merge_only, caption_bpe=args.caption_bpe,
                     captions=args.captions, precision=args.precision, device=args.device)


if __name__ == "__main__":
    main()
