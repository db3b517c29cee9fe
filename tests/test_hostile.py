"""Hostile input and faults, as a table: every case runs one `python -m drr...` command (its
`main`, in this process) on a bad input and asserts exit status 2, exactly one `error:` line that
names the file (and the field or key), no traceback, and that the results already computed are
unchanged (a hash of every file under results/, lock files aside). Plus the kill cases: only the
process that started a training is killed (as when Snakemake is), and the rerun finds one writer
and an intact, strictly increasing metrics.jsonl.

The fixtures are the tiny 4x4x2-code models of tests/transformer_fixtures.py.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import pytest
import torch
from transformer_fixtures import REPO, make_tokenizer_and_codes, tiny_config

from drr.core import lock
from drr.core.config import save_config

FMNIST = Path("/usr/share/datasets/fashion-mnist")
SETTINGS = ("transformer.train.steps=3", "generation.num_samples=8", "generation.batch_size=8",
            "generation.shard_size=8")


class Payload:
    """A pickle that runs `touch <marker>` when unpickled by a loader that allows any object."""

    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def w(tmp_path_factory):
    """A finished tiny run (tokenizer, code map, transformer, 8 samples, a reference) under
    results/, and a folder bad/ of hostile files next to it."""
    from drr.metrics.reference import FORMAT, write_reference
    from drr.sampling.generate import generate
    from drr.transformer.train import train

    root = tmp_path_factory.mktemp("hostile")
    res, bad = root / "results", root / "bad"
    bad.mkdir()
    cfg = tiny_config(*SETTINGS)
    config = root / "config.yaml"
    save_config(cfg, config)
    tok, codes = make_tokenizer_and_codes(res / "tok", cfg)
    model = train(cfg, tok, codes, res / "transformers/t/checkpoint.pt")
    samples = res / "samples/t"
    generate(cfg, tok, model, samples)
    rng = np.random.default_rng(0)
    meta = {"format": FORMAT, "kind": "imported", "reference_id": "test",
            "stats_extractor": "imported:0", "features_extractor": "imported:0", "source": "test"}
    write_reference(res / "reference.npz", np.zeros(2048), np.eye(2048),
                    rng.normal(size=(16, 2048)), meta)
    marker = root / "PWNED"
    torch.save({"kind": Payload(marker), "state_dict": {}}, bad / "payload.pt")
    tok_bytes = tok.read_bytes()
    (bad / "empty.pt").write_bytes(b"")
    (bad / "truncated.pt").write_bytes(tok_bytes[: len(tok_bytes) // 2])
    (bad / "random.pt").write_bytes(rng.bytes(4096))
    return {"root": root, "res": res, "bad": bad, "config": config, "cfg": cfg, "tok": tok,
            "codes": codes, "model": model, "samples": samples / "samples.npz",
            "reference": res / "reference.npz", "marker": marker}


def results_hash(folder: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(folder.rglob("*")):
        if p.is_file() and not p.name.endswith(".lock"):
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


# --- what each case runs -----------------------------------------------------------------------

def sets(*kv):
    return [a for s in kv for a in ("--set", s)]


def generate(w, tokenizer=None, transformer=None, out=None, *more):
    return ("drr.sampling.generate",
            ["--config", str(w["config"]), "--tokenizer", str(tokenizer or w["tok"]),
             "--transformer", str(transformer or w["model"]),
             "--out", str(out or w["res"] / "samples/t"), *more])


def train_transformer(w, tokenizer=None, codes=None, out=None, *more):
    return ("drr.transformer.train",
            ["--config", str(w["config"]), "--tokenizer", str(tokenizer or w["tok"]),
             "--codes", str(codes or w["codes"]),
             "--out", str(out or w["res"] / "transformers/t/checkpoint.pt"), *more])


def encode(w, tokenizer):
    return ("drr.codes.encode", ["--config", str(w["config"]), "--tokenizer", str(tokenizer),
                                 "--split", "test", "--out", str(w["res"] / "tok/codes-test")])


def score(w, samples=None, reference=None, out=None, *more):
    return ("drr.metrics.score",
            ["--config", str(w["config"]), "--samples", str(samples or w["samples"]),
             "--reference", str(reference or w["reference"]),
             "--out", str(out or w["res"] / "metrics/t.parquet"), *more])


def inpaint(w, codes):
    return ("drr.sampling.inpaint",
            ["--config", str(w["config"]), "--tokenizer", str(w["tok"]), "--transformer",
             str(w["model"]), "--codes", str(codes), "--out", str(w["res"] / "inpaint.png")])


def train_tokenizer(w, out, *more):
    return ("drr.tokenizer.train",
            ["--config", "configs/experiments/tiny.yaml", "--out", str(out),
             *sets("data.max_images=64", "tokenizer.train.steps=2", "tokenizer.train.batch_size=8",
                   "tokenizer.model.ch_mult=[1, 2]", "tokenizer.model.code_shape=[16, 16, 2]",
                   f"data.cache_dir={w['root']}/cache"), *more])


# --- hostile files -------------------------------------------------------------------------------

def damaged_parquet(w, how: str) -> Path:
    dst = w["bad"] / f"codes-{how}"
    if not dst.exists():
        shutil.copytree(w["codes"], dst)
        part = sorted(dst.glob("part-*.parquet"))[0]
        data = part.read_bytes()
        part.write_bytes(data[: len(data) // 2] if how == "truncated" else
                         np.random.default_rng(1).bytes(len(data)))
    return dst


def wrong_state_dict(w) -> Path:
    """A transformer file of the right kind whose weights are another model's."""
    ckpt = torch.load(w["model"], weights_only=True)
    ckpt["state_dict"] = {k: v[..., :1] if v.ndim else v for k, v in ckpt["state_dict"].items()}
    path = w["bad"] / "wrong-weights.pt"
    torch.save(ckpt, path)
    return path


def wrong_model_config(w) -> Path:
    ckpt = torch.load(w["model"], weights_only=True)
    ckpt["model_config"] = {"no_such_field": 1}
    path = w["bad"] / "wrong-config.pt"
    torch.save(ckpt, path)
    return path


def other_tokenizer(w) -> Path:
    from drr.tokenizer.io import save_tokenizer
    from drr.tokenizer.model import RQVAE, RQVAEConfig
    torch.manual_seed(1)
    path = w["bad"] / "other-tokenizer.pt"
    save_tokenizer(RQVAE(RQVAEConfig(**w["cfg"]["tokenizer"]["model"])), w["cfg"], path)
    return path


def unshared_tokenizer(w) -> Path:
    from drr.tokenizer.io import save_tokenizer
    from drr.tokenizer.model import RQVAE, RQVAEConfig
    cfg = tiny_config(*SETTINGS, "tokenizer.model.shared_codebook=false")
    path = w["bad"] / "unshared.pt"
    save_tokenizer(RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])), cfg, path)
    return path


def run_copy(w, name: str, state: Callable[[dict], object] | None) -> Path:
    """A copy of the trained transformer's run folder under results/ (without its final
    checkpoint), its train-state.pt replaced by `state(w)` (bytes, or an object to torch.save)."""
    dst = w["res"] / "transformers" / name
    if not dst.exists():
        shutil.copytree(w["model"].parent, dst)
        (dst / "checkpoint.pt").unlink()
        if name.startswith("tok-"):  # a tokenizer run: the transformer run's config is not its own
            (dst / "config.yaml").unlink()
        if state is not None:
            obj = state(w)
            if isinstance(obj, bytes):
                (dst / "train-state.pt").write_bytes(obj)
            else:
                torch.save(obj, dst / "train-state.pt")
    return dst / "checkpoint.pt"


def foreign_state(w):
    state = torch.load(w["model"].parent / "train-state.pt", weights_only=False)
    state["model"] = {k: v[..., :1] for k, v in state["model"].items()}
    return state


def samples_without(w, keep=("labels",)) -> Path:
    with np.load(w["samples"]) as z:
        arrays = {k: z[k] for k in z.files if k in keep}
    path = w["bad"] / f"samples-{'-'.join(keep) or 'none'}.npz"
    np.savez(path, **arrays)
    return path


def reference_of(w, name: str, **arrays) -> Path:
    with np.load(w["reference"]) as z:
        base = {k: z[k] for k in z.files}
    base.update(arrays)
    base = {k: v for k, v in base.items() if v is not None}
    path = w["bad"] / name
    np.savez(path, **base)
    return path


def canonical_payload(w) -> Path:
    from drr.metrics import inception
    wd = w["bad"] / "weights"
    dst = wd / inception.CANONICAL_DIR / inception.CANONICAL_FILE
    dst.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(w["bad"] / "payload.pt", dst)
    return wd


def write_file(w, name: str, text: str) -> Path:
    path = w["bad"] / name
    path.write_text(text)
    return path


def finished_tokenizer_run(w) -> Path:
    """A finished tokenizer run (checkpoint and config.yaml) under results/."""
    run = w["res"] / "tokenizers/done"
    if not run.exists():
        run.mkdir(parents=True)
        shutil.copy(w["tok"], run / "checkpoint.pt")
        save_config(w["cfg"], run / "config.yaml")
    return run / "checkpoint.pt"


def poisoned(w, which: str, key: str, value: float) -> Path:
    """The tokenizer or transformer file with every value of tensor `key` set to `value`."""
    src = w["tok"] if which == "tokenizer" else w["model"]
    path = w["bad"] / f"{which}-{key}-{value}.pt"
    if not path.exists():
        ckpt = torch.load(src, weights_only=True)
        ckpt["state_dict"][key] = torch.full_like(ckpt["state_dict"][key], value)
        torch.save(ckpt, path)
    return path


def official_with_nan(w, which: str) -> Path:
    """An official-layout file of the config's RQ-VAE (or its AR RQ-Transformer) with one NaN."""
    path = w["bad"] / f"official-{which}-nan.pt"
    if which == "rqvae":
        from drr.tokenizer.model import RQVAE, RQVAEConfig
        from drr.tokenizer.official import save_official
        model, key = RQVAE(RQVAEConfig(**w["cfg"]["tokenizer"]["model"])), "decoder.conv_out.bias"
    else:
        from drr.transformer.build import build_transformer
        from drr.transformer.model import TransformerConfig
        from drr.transformer.official import save_official
        cfg = tiny_config(*SETTINGS, "transformer.model.kind=ar")
        model, key = build_transformer(TransformerConfig.from_experiment(cfg)), "classifier.linear.bias"
    with torch.no_grad():
        dict(model.named_parameters())[key][0] = float("nan")
    save_official(model, path)
    return path


def code_map_of(w, name: str, codes=None, meta=None, rows=None, codes_type=None) -> Path:
    """A finished code map like the fixture's (one shard), with its codes, metadata (bytes), rows
    or the type of its codes column replaced."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    dst = w["bad"] / name
    if not dst.exists():
        shutil.copytree(w["codes"], dst)
        part = dst / "part-00000.parquet"
        table = pq.read_table(part)
        col = table.column("codes").combine_chunks()
        if codes is not None:
            flat = col.values.to_numpy().copy()
            flat[codes[0]] = codes[1]
            col = pa.FixedSizeListArray.from_arrays(pa.array(flat, pa.int16()), col.type.list_size)
        if codes_type is not None:
            col = pa.FixedSizeListArray.from_arrays(col.values.cast(codes_type), col.type.list_size)
        table = table.set_column(table.column_names.index("codes"), "codes", col)
        if rows is not None:
            table = table.slice(0, rows)
        if meta is not None:
            table = table.replace_schema_metadata({b"drr": meta})
        pq.write_table(table, part)
    return dst


def meta_without(w, key: str) -> bytes:
    import pyarrow.parquet as pq
    meta = json.loads(pq.read_schema(w["codes"] / "part-00000.parquet").metadata[b"drr"])
    meta.pop(key)
    return json.dumps(meta).encode()


def a_file(w) -> Path:
    path = w["bad"] / "a-file"
    path.write_text("not a folder\n")
    return path


def a_folder(w, name: str) -> Path:
    path = w["bad"] / name
    path.mkdir(exist_ok=True)
    return path


@dataclass
class Case:
    name: str
    command: Callable[[dict], tuple[str, list[str]]]
    expect: str  # regex the error line must match (it names the file and the field or key)
    needs: str = ""  # "fmnist": Fashion-MNIST must be installed
    extractor: str = ""  # "fake": features must not be computed; "stub": a cheap 2048-wide one
    patch: Callable | None = None  # patch(monkeypatch) before the command runs


B = "bad/"
CASES = [
    # code execution from a file: refused, the payload never runs
    Case("payload as --tokenizer (generate)", lambda w: generate(w, tokenizer=w["bad"] / "payload.pt"),
         rf"{B}payload\.pt: refused as tokenizer checkpoint: it asks to build posix\.system"),
    Case("payload as --transformer (generate)", lambda w: generate(w, transformer=w["bad"] / "payload.pt"),
         rf"{B}payload\.pt: refused as transformer checkpoint: it asks to build posix\.system"),
    Case("payload as --tokenizer (train)", lambda w: train_transformer(
        w, tokenizer=w["bad"] / "payload.pt", out=w["bad"] / "t1/checkpoint.pt"),
         rf"{B}payload\.pt: refused as tokenizer checkpoint"),
    Case("payload as --tokenizer (encode)", lambda w: encode(w, w["bad"] / "payload.pt"),
         rf"{B}payload\.pt: refused as tokenizer checkpoint"),
    Case("payload as transformer train-state.pt", lambda w: train_transformer(
        w, out=run_copy(w, "payload-state", lambda w: (w["bad"] / "payload.pt").read_bytes())),
         r"transformers/payload-state/train-state\.pt: refused as training state: it asks to build posix\.system"),
    Case("payload as tokenizer train-state.pt", lambda w: train_tokenizer(
        w, run_copy(w, "tok-payload-state", lambda w: (w["bad"] / "payload.pt").read_bytes())),
         r"tok-payload-state/train-state\.pt: refused as training state", needs="fmnist"),
    Case("payload as Inception weights (score)", lambda w: score(
        w, None, None, w["bad"] / "m-payload.parquet", *sets(f"metrics.weights_dir={canonical_payload(w)}",
                                                     "metrics.fid_network=torch-fidelity")),
         r"weights-inception-2015-12-05-6726825d\.pth: refused as torch-fidelity Inception weights file"),
    Case("payload as --inception (weights)", lambda w: ("drr.metrics.weights", [
        "--config", str(w["config"]), "--inception", str(w["bad"] / "payload.pt"), "--no-download",
        *sets(f"metrics.weights_dir={w['bad']}/weights-placed")]),
         rf"{B}payload\.pt"),
    Case("payload as official RQ-VAE", lambda w: ("drr.tokenizer.import_official", [
        "--config", str(w["config"]), *sets(f"tokenizer.checkpoint={w['bad']}/payload.pt"),
        "--out", str(w["bad"] / "imp/checkpoint.pt")]),
         rf"{B}payload\.pt: refused as torch checkpoint \(the official RQ-VAE layout\)"),
    Case("payload as official RQ-Transformer", lambda w: ("drr.transformer.import_official", [
        "--config", str(w["config"]), *sets(f"transformer.checkpoint={w['bad']}/payload.pt",
                                            "transformer.model.kind=ar"),
        "--tokenizer", str(w["tok"]), "--out", str(w["bad"] / "imp-t/checkpoint.pt")]),
         rf"{B}payload\.pt: refused as torch checkpoint"),
    # damaged model files
    Case("empty tokenizer (generate)", lambda w: generate(w, tokenizer=w["bad"] / "empty.pt"),
         rf"{B}empty\.pt: tokenizer checkpoint is an empty file"),
    Case("truncated tokenizer (generate)", lambda w: generate(w, tokenizer=w["bad"] / "truncated.pt"),
         rf"{B}truncated\.pt: not a readable tokenizer checkpoint"),
    Case("random transformer (generate)", lambda w: generate(w, transformer=w["bad"] / "random.pt"),
         rf"{B}random\.pt: not a readable transformer checkpoint"),
    Case("truncated transformer (generate)", lambda w: generate(w, transformer=w["bad"] / "truncated.pt"),
         rf"{B}truncated\.pt: not a readable transformer checkpoint"),
    Case("empty tokenizer (encode)", lambda w: encode(w, w["bad"] / "empty.pt"),
         rf"{B}empty\.pt: tokenizer checkpoint is an empty file"),
    Case("random tokenizer (encode)", lambda w: encode(w, w["bad"] / "random.pt"),
         rf"{B}random\.pt: not a readable tokenizer checkpoint"),
    Case("missing tokenizer (generate)", lambda w: generate(w, tokenizer=w["bad"] / "nope.pt"),
         rf"{B}nope\.pt: tokenizer checkpoint not found"),
    Case("tokenizer given as transformer", lambda w: generate(w, transformer=w["tok"]),
         r"tok/tokenizer\.pt: field 'kind' is not 'drr-transformer'"),
    Case("transformer weights of another model", lambda w: generate(w, transformer=wrong_state_dict(w)),
         rf"{B}wrong-weights\.pt: field 'state_dict' does not fit its model_config"),
    Case("transformer model_config garbage", lambda w: generate(w, transformer=wrong_model_config(w)),
         rf"{B}wrong-config\.pt: field 'model_config' does not describe a model"),
    # damaged code maps
    Case("truncated Parquet (train)", lambda w: train_transformer(
        w, codes=damaged_parquet(w, "truncated"), out=w["bad"] / "t2/checkpoint.pt"),
         rf"{B}codes-truncated/part-\d+\.parquet: not a readable Parquet shard"),
    Case("random Parquet (train)", lambda w: train_transformer(
        w, codes=damaged_parquet(w, "random"), out=w["bad"] / "t3/checkpoint.pt"),
         rf"{B}codes-random/part-\d+\.parquet: not a readable Parquet shard"),
    Case("truncated Parquet (inpaint)", lambda w: inpaint(w, damaged_parquet(w, "truncated")),
         rf"{B}codes-truncated/part-\d+\.parquet: not a readable Parquet shard"),
    # damaged training states
    Case("truncated train-state.pt", lambda w: train_transformer(
        w, out=run_copy(w, "truncated-state", lambda w: (w["model"].parent / "train-state.pt")
                        .read_bytes()[:2000])),
         r"truncated-state/train-state\.pt: not a readable training state"),
    Case("train-state.pt of another model", lambda w: train_transformer(
        w, out=run_copy(w, "foreign-state", foreign_state)),
         r"foreign-state/train-state\.pt: field 'model' does not fit this run"),
    # numbers that are not numbers
    Case("guidance_scale NaN (--set)", lambda w: generate(w, None, None, None, *sets("sampling.guidance_scale=.nan")),
         r"--set: key 'sampling\.guidance_scale': \.nan is not a finite number"),
    Case("guidance_scale inf (--set)", lambda w: generate(w, None, None, None, *sets("sampling.guidance_scale=.inf")),
         r"--set: key 'sampling\.guidance_scale': \.inf is not a finite number"),
    Case("lr NaN (--set, transformer)", lambda w: train_transformer(
        w, None, None, w["bad"] / "t4/checkpoint.pt", *sets("transformer.train.lr=.nan")),
         r"--set: key 'transformer\.train\.lr': \.nan is not a finite number"),
    Case("lr -inf (--set, tokenizer)", lambda w: train_tokenizer(
        w, w["bad"] / "tk/checkpoint.pt", *sets("tokenizer.train.lr=-.inf")),
         r"--set: key 'tokenizer\.train\.lr': -\.inf is not a finite number"),
    Case("temperature NaN (config file)", lambda w: ("drr.sampling.generate", [
        "--config", str(w["config"]), "--config",
        str(write_file(w, "nan.yaml", "sampling:\n  draft:\n    temperature: .nan\n")),
        "--tokenizer", str(w["tok"]), "--transformer", str(w["model"]), "--out", str(w["bad"] / "g")]),
         rf"{B}nan\.yaml: key 'sampling\.draft\.temperature': \.nan is not a finite number"),
    Case("top_p inf in a list (config file)", lambda w: ("drr.sampling.generate", [
        "--config", str(w["config"]), "--config",
        str(write_file(w, "inf.yaml", "tokenizer:\n  train:\n    betas: [0.5, .inf]\n")),
        "--tokenizer", str(w["tok"]), "--transformer", str(w["model"]), "--out", str(w["bad"] / "g")]),
         rf"{B}inf\.yaml: key 'tokenizer\.train\.betas\[1\]': \.inf is not a finite number"),
    Case("string NaN (--set)", lambda w: generate(w, None, None, None, *sets("sampling.draft.temperature=nan")),
         r"--set: key 'sampling\.draft\.temperature': 'nan' is not of type 'number'"),
    Case("negative guidance_scale", lambda w: generate(w, None, None, None, *sets("sampling.guidance_scale=-1")),
         r"--set: key 'sampling\.guidance_scale': -1 is less than the minimum of 0"),
    Case("unknown key (--set)", lambda w: generate(w, None, None, None, *sets("sampling.guidanse_scale=1")),
         r"--set: unknown key 'sampling\.guidanse_scale' \(did you mean 'sampling\.guidance_scale'\?\)"),
    Case("--set without =", lambda w: generate(w, None, None, None, "--set", "sampling.guidance_scale"),
         r"--set 'sampling\.guidance_scale': expected key=value"),
    Case("config not YAML", lambda w: ("drr.sampling.generate", [
        "--config", str(write_file(w, "broken.yaml", "sampling: [1,\n")),
        "--tokenizer", str(w["tok"]), "--transformer", str(w["model"]), "--out", str(w["bad"] / "g")]),
         rf"{B}broken\.yaml: not valid YAML"),
    # sample sets and references
    Case("samples without arr_0 (phase all)", lambda w: score(
        w, samples_without(w), None, w["bad"] / "m1.parquet", "--phase", "all"),
         rf"{B}samples-labels\.npz: no 'arr_0' array"),
    Case("samples without arr_0 (phase revised)", lambda w: score(
        w, samples_without(w), None, w["bad"] / "m2.parquet"),
         rf"{B}samples-labels\.npz: no 'arr_0' array for phase revised"),
    Case("samples not an npz", lambda w: score(w, w["bad"] / "random.pt", None, w["bad"] / "m3.parquet"),
         rf"{B}random\.pt: not a readable \.npz"),
    Case("reference without mu", lambda w: score(
        w, None, reference_of(w, "ref-no-mu.npz", mu=None), w["bad"] / "m4.parquet"),
         rf"{B}ref-no-mu\.npz: no 'mu' array"),
    Case("reference of another feature width", lambda w: score(
        w, None, reference_of(w, "ref-64.npz", mu=np.zeros(64), sigma=np.eye(64),
                              features=np.zeros((16, 64), np.float32)), w["bad"] / "m5.parquet"),
         rf"{B}ref-64\.npz: 'mu' has shape \(64,\); the Inception pool features are 2048 wide"),
    # settings that silently gave wrong results, inputs that must be checked before writing
    Case("tokenizer without a shared codebook (train)", lambda w: train_transformer(
        w, tokenizer=unshared_tokenizer(w), out=w["bad"] / "t5/checkpoint.pt"),
         rf"{B}unshared\.pt: field 'model_config\.shared_codebook' is false"),
    Case("transformer.checkpoint set (train)", lambda w: train_transformer(
        w, None, None, w["bad"] / "t6/checkpoint.pt", *sets(f"transformer.checkpoint={w['tok']}")),
         r"key 'transformer\.checkpoint' is set"),
    Case("code map of another tokenizer", lambda w: train_transformer(
        w, tokenizer=other_tokenizer(w), codes=w["codes"],
        out=w["bad"] / "t7/checkpoint.pt"),
         r"codes: metadata 'tokenizer_sha256' is"),
    Case("encode over an existing code map", lambda w: ("drr.codes.encode", [
        "--config", str(w["config"]), "--tokenizer", str(w["tok"]), "--split", "train",
        "--out", str(w["codes"])]),
         r"tok/codes: already exists"),
    Case("shard out of range", lambda w: generate(w, None, None, None, "--shard", "99"),
         r"--shard 99: generation\.num_samples 8 in shards of 8 makes shards 0\.\.0"),
    Case("data root missing over a finished tokenizer run", lambda w: train_tokenizer(
        w, finished_tokenizer_run(w), *sets("data.root=/nonexistent", "data.download=false")),
         r"/nonexistent"),
    # weights that are not finite: they gave one-code samples and all-zero code maps, exit 0
    Case("transformer weights NaN (generate)", lambda w: generate(
        w, transformer=poisoned(w, "transformer", "classifier.linear.weight", float("nan"))),
         rf"{B}transformer-classifier\.linear\.weight-nan\.pt: field 'state_dict' tensor "
         r"'classifier\.linear\.weight' holds NaN or inf"),
    Case("transformer weights inf (generate)", lambda w: generate(
        w, transformer=poisoned(w, "transformer", "pos_emb_hw", float("inf"))),
         rf"{B}transformer-pos_emb_hw-inf\.pt: field 'state_dict' tensor 'pos_emb_hw' holds NaN or inf"),
    Case("tokenizer weights NaN (encode)", lambda w: encode(
        w, poisoned(w, "tokenizer", "encoder.conv_in.weight", float("nan"))),
         rf"{B}tokenizer-encoder\.conv_in\.weight-nan\.pt: field 'state_dict' tensor "
         r"'encoder\.conv_in\.weight' holds NaN or inf"),
    Case("tokenizer weights NaN (generate)", lambda w: generate(
        w, tokenizer=poisoned(w, "tokenizer", "encoder.conv_in.weight", float("nan"))),
         r"encoder\.conv_in\.weight-nan\.pt: field 'state_dict' tensor 'encoder\.conv_in\.weight'"),
    Case("official RQ-VAE with a NaN (import)", lambda w: ("drr.tokenizer.import_official", [
        "--config", str(w["config"]), *sets(f"tokenizer.checkpoint={official_with_nan(w, 'rqvae')}"),
        "--out", str(w["bad"] / "imp-nan/checkpoint.pt")]),
         rf"{B}official-rqvae-nan\.pt: field 'state_dict' tensor 'decoder\.conv_out\.bias' holds NaN"),
    Case("official RQ-Transformer with a NaN (import)", lambda w: ("drr.transformer.import_official", [
        "--config", str(w["config"]), *sets(f"transformer.checkpoint={official_with_nan(w, 'ar')}",
                                            "transformer.model.kind=ar"),
        "--tokenizer", str(w["tok"]), "--out", str(w["bad"] / "imp-t-nan/checkpoint.pt")]),
         rf"{B}official-ar-nan\.pt: field 'state_dict' tensor 'classifier\.linear\.bias' holds NaN"),
    Case("finite weights whose logits overflow (generate)", lambda w: generate(
        w, transformer=poisoned(w, "transformer", "classifier.linear.weight", 1e38),
        out=w["bad"] / "g-overflow"),
         r"the transformer's logits hold NaN or inf"),
    # references that are not statistics: checked before any feature is computed
    Case("reference covariance -I", lambda w: score(
        w, None, reference_of(w, "ref-neg.npz", sigma=-np.eye(2048)), w["bad"] / "m6.parquet"),
         rf"{B}ref-neg\.npz: 'sigma' is not positive semi-definite \(smallest eigenvalue -1\)",
         extractor="fake"),
    Case("reference mean NaN", lambda w: score(
        w, None, reference_of(w, "ref-mu-nan.npz", mu=np.full(2048, np.nan)), w["bad"] / "m7.parquet"),
         rf"{B}ref-mu-nan\.npz: 'mu' holds NaN or inf", extractor="fake"),
    Case("reference covariance inf", lambda w: score(
        w, None, reference_of(w, "ref-sigma-inf.npz", sigma=np.diag(np.r_[np.inf, np.ones(2047)])),
        w["bad"] / "m8.parquet"),
         rf"{B}ref-sigma-inf\.npz: 'sigma' holds NaN or inf", extractor="fake"),
    Case("reference covariance not symmetric", lambda w: score(
        w, None, reference_of(w, "ref-asym.npz", sigma=np.eye(2048) + np.triu(np.ones((2048, 2048)), 1)),
        w["bad"] / "m9.parquet"),
         rf"{B}ref-asym\.npz: 'sigma' is not symmetric", extractor="fake"),
    Case("reference features NaN", lambda w: score(
        w, None, reference_of(w, "ref-feat-nan.npz", features=np.full((16, 2048), np.nan, np.float32)),
        w["bad"] / "m10.parquet"),
         rf"{B}ref-feat-nan\.npz: 'features' holds NaN or inf", extractor="fake"),
    Case("imported statistics NaN (reference --import)", lambda w: ("drr.metrics.reference", [
        "--config", str(w["config"]), "--import", str(reference_of(
            w, "import-nan.npz", mu=np.full(2048, np.nan), meta=None, features=None)),
        "--out", str(w["bad"] / "imported.npz"), "--cache-dir", ""]),
         rf"{B}import-nan\.npz: 'mu' holds NaN or inf", extractor="fake"),
    # a metric outside its possible range stops the job instead of being written
    Case("FID below 0 (score)", lambda w: score(w, None, None, w["bad"] / "m11.parquet"),
         rf"{B}m11\.parquet: metric 'fid' of phase revised is -5, outside \[-0\.001, inf\]",
         extractor="stub", patch=lambda mp: mp.setattr("drr.metrics.maths.fid_from_stats",
                                                       lambda *a: -5.0)),
    Case("recall NaN (score)", lambda w: score(w, None, None, w["bad"] / "m12.parquet"),
         rf"{B}m12\.parquet: metric 'recall' of phase revised is nan, outside \[0, 1\]",
         extractor="stub", patch=lambda mp: mp.setattr("drr.metrics.maths.precision_recall",
                                                       lambda *a: ((0.5, float("nan")), None))),
    # code maps that are not: refused when read, before any work
    Case("code map of float64 codes (train)", lambda w: train_transformer(
        w, codes=code_map_of(w, "codes-float", codes_type=__import__("pyarrow").float64()),
        out=w["bad"] / "t8/checkpoint.pt"),
         rf"{B}codes-float/part-00000\.parquet: column 'codes' holds double codes, not integers"),
    Case("code >= K (train)", lambda w: train_transformer(
        w, codes=code_map_of(w, "codes-k", codes=(5, 32)), out=w["bad"] / "t9/checkpoint.pt"),
         rf"{B}codes-k/part-00000\.parquet: column 'codes' spans \[0, 32\], outside the "
         r"codebook's 0\.\.31"),
    Case("code >= K (inpaint)", lambda w: inpaint(w, code_map_of(w, "codes-k", codes=(5, 32))),
         rf"{B}codes-k/part-00000\.parquet: column 'codes' spans \[0, 32\]"),
    Case("negative code (train)", lambda w: train_transformer(
        w, codes=code_map_of(w, "codes-neg", codes=(7, -1)), out=w["bad"] / "t10/checkpoint.pt"),
         rf"{B}codes-neg/part-00000\.parquet: column 'codes' spans \[-1, \d+\]"),
    Case("negative code (inpaint)", lambda w: inpaint(w, code_map_of(w, "codes-neg", codes=(7, -1))),
         rf"{B}codes-neg/part-00000\.parquet: column 'codes' spans \[-1, \d+\]"),
    Case("code map metadata not JSON (train)", lambda w: train_transformer(
        w, codes=code_map_of(w, "codes-meta", meta=b"{not json"), out=w["bad"] / "t11/checkpoint.pt"),
         rf"{B}codes-meta/part-00000\.parquet: metadata 'drr' is not JSON"),
    Case("code map without code_shape (train)", lambda w: train_transformer(
        w, codes=code_map_of(w, "codes-noshape", meta=meta_without(w, "code_shape")),
        out=w["bad"] / "t12/checkpoint.pt"),
         rf"{B}codes-noshape/part-00000\.parquet: metadata 'code_shape' is None, expected \[H, W, D\]"),
    Case("code map of 0 rows (train)", lambda w: train_transformer(
        w, codes=code_map_of(w, "codes-empty", rows=0), out=w["bad"] / "t13/checkpoint.pt"),
         rf"{B}codes-empty: holds no rows"),
    # --out where it cannot be: found before any work
    Case("--out naming a file (generate)", lambda w: generate(w, out=a_file(w)),
         rf"{B}a-file: is a file; --out names the folder of the samples"),
    Case("--out inside a file (train)", lambda w: train_transformer(w, out=a_file(w) / "checkpoint.pt"),
         rf"{B}a-file: is a file, but the output goes into a folder of that name"),
    Case("--out naming a folder (train)", lambda w: train_transformer(
        w, out=a_folder(w, "ckpt-folder")),
         rf"{B}ckpt-folder: is a folder, and this output is a file"),
    Case("--out naming a folder (score)", lambda w: score(w, None, None, a_folder(w, "m.parquet")),
         rf"{B}m\.parquet: is a folder, and this output is a file", extractor="fake"),
    Case("--out naming a file (encode)", lambda w: ("drr.codes.encode", [
        "--config", str(w["config"]), "--tokenizer", str(w["tok"]), "--split", "test",
        "--out", str(a_file(w))]),
         rf"{B}a-file: is a file, and this output is a folder"),
]


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str]:
    mod = importlib.import_module(module)
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        mod.main(argv)
    return e.value.code, capsys.readouterr().err


def check_refused(w, command, expect: str, capsys) -> str:
    """Run `command`; assert exit 2, one error line matching `expect`, no traceback, results
    unchanged, the payload not run, and no temporary file left anywhere. Returns the line."""
    module, argv = command
    before = results_hash(w["res"])
    code, err = run_main(module, argv, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2, err[-2000:]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert re.search(expect, errors[0]), errors[0]
    assert "weights_only" not in errors[0]
    assert results_hash(w["res"]) == before
    assert not w["marker"].exists(), "the payload ran"
    assert not [p for p in w["root"].rglob("*.tmp")], "a temporary file was left behind"
    return errors[0]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_hostile_input_is_refused(case, w, capsys, monkeypatch):
    if case.needs == "fmnist" and not FMNIST.is_dir():
        pytest.skip("Fashion-MNIST (Debian dataset-fashion-mnist) not installed")
    monkeypatch.chdir(REPO)
    if case.name.startswith("reference of another") or case.name.startswith("samples") \
            or case.extractor:
        monkeypatch.setattr("drr.metrics.inception.load_inception", lambda *a, **k: (
            StubExtractor() if case.extractor == "stub" else FakeExtractor()))
    if case.patch is not None:
        case.patch(monkeypatch)
    command = case.command(w)  # builds the hostile files first
    check_refused(w, command, case.expect, capsys)
    if case.name == "data root missing over a finished tokenizer run":
        # the finished run's config.yaml is untouched (also covered by the results hash)
        assert "/nonexistent" not in (w["res"] / "tokenizers/done/config.yaml").read_text()


class FakeExtractor:
    """Stands in for the Inception network where a case must stop before features are made."""
    id = "fake"
    pool_dim = 2048
    calls = 0

    def __call__(self, images):
        FakeExtractor.calls += 1
        raise AssertionError("features were computed for an input that should have been refused")


class StubExtractor:
    """A cheap 2048-wide extractor (the pixels, repeated), where a case must compute features."""
    id = "stub"
    pool_dim = 2048
    preprocessing = "stub"
    logits_note = "no logits: stub"

    def __call__(self, images):
        x = images.float().flatten(1) / 255
        return {"pool": x.repeat(1, -(-2048 // x.shape[1]))[:, :2048].numpy()}


def test_second_writer_stops_naming_folder_and_holder(w, capsys, monkeypatch):
    path = lock.lock_path(w["res"] / "samples", "t.samples")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, os, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); f.seek(0); f.truncate(); f.write(f'pid {os.getpid()}'); "
         "f.flush(); print('held', flush=True); time.sleep(60)", str(path)],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        monkeypatch.setattr(lock, "WAIT_S", 1.0)
        line = check_refused(w, generate(w), rf"results/samples: another drr process "
                             rf"\(pid {holder.pid}\) is writing t\.samples in this folder", capsys)
        assert "wait for it to end" in line
    finally:
        holder.kill()
        holder.wait()


def test_a_waiting_writer_goes_on_once_the_holder_ends(tmp_path):
    folder = tmp_path / "run"
    path = lock.lock_path(folder, "x")
    folder.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import fcntl, sys, time; f = open(sys.argv[1], 'a+'); "
         "fcntl.flock(f, fcntl.LOCK_EX); print('held', flush=True); time.sleep(2)", str(path)],
        stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    t0 = time.monotonic()
    with lock.hold(folder, "x", watch=False):
        waited = time.monotonic() - t0
        assert path.read_text() == f"pid {os.getpid()}\n"
    holder.wait()
    assert 0.5 < waited < lock.WAIT_S


# --- faults of the machine: a full disk, a read-only folder ---------------------------------------

@pytest.fixture
def small_fs(tmp_path):
    """A mount point factory for tiny tmpfs file systems (root only; skipped elsewhere)."""
    mounted = []

    def make(name: str, size_kb: int, read_only: bool = False) -> Path:
        point = tmp_path / name
        point.mkdir()
        opts = f"size={size_kb}k" + (",ro" if read_only else "")
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)],
                           capture_output=True, text=True)
        if r.returncode:
            pytest.skip(f"cannot mount a tmpfs here: {r.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        # lazy: a file the code under test left open must not keep the mount (and the tmp dir) alive
        subprocess.run(["umount", "--lazy", str(point)], check=False)


def test_read_only_output_folder_is_found_before_any_work(w, small_fs, capsys, monkeypatch):
    ro = small_fs("ro", 64, read_only=True)
    monkeypatch.setattr("drr.metrics.inception.load_inception",
                        lambda *a, **k: pytest.fail("work started before the folder was checked"))
    check_refused(w, score(w, out=ro / "t.parquet"),
                  rf"{ro}: output folder cannot be written \(Read-only file system\)", capsys)


def test_full_disk_during_training_leaves_no_partial_file(w, small_fs, capsys):
    full = small_fs("full", 64)
    check_refused(w, train_transformer(w, out=full / "checkpoint.pt"),
                  rf"{full}/(train-state|checkpoint)\.pt: cannot be written", capsys)
    assert sorted(p.name for p in full.iterdir()) <= [".checkpoint.pt.lock", "config.yaml",
                                                      "metrics.jsonl"]


def test_full_disk_during_generation_leaves_no_partial_file(w, capsys, monkeypatch):
    """ENOSPC raised by the writer itself (the same on every machine, root or not)."""
    import errno

    def no_space(f, *a, **k):
        (f.write if hasattr(f, "write") else Path(f).write_bytes)(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(np, "savez", no_space)
    monkeypatch.setattr(np, "savez_compressed", no_space)
    out = w["bad"] / "gen-full"
    check_refused(w, generate(w, out=out), rf"{B}gen-full/\S+: cannot be written \(No space left on device\)",
                  capsys)
    assert not [p for p in out.rglob("*") if p.is_file() and p.suffix in (".npz", ".tmp")]


def fill(fs: Path, leave_bytes: int) -> None:
    """Fill the tmpfs at `fs` until `leave_bytes` (page-rounded) are free."""
    with open(fs / "filler", "wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:
            pass
    os.truncate(fs / "filler", max(0, (fs / "filler").stat().st_size - leave_bytes))


@pytest.mark.parametrize("free_kb", [0, 4, 8, 12, 16, 20])
def test_full_disk_while_samples_are_merged_is_one_line(w, small_fs, capsys, monkeypatch, free_kb):
    """A real full disk (tmpfs) at different points of the merge: config.yaml, samples.npz (its
    members, the zip's central directory), grid.png, samples.json. One line naming the file, no
    ZipFile complaint when the half-written zip is collected, no temporary left."""
    import gc

    fs = small_fs(f"full{free_kb}", 1024)
    out = fs / "t"
    shutil.copytree(w["samples"].parent / "shards", out / "shards")
    (fs / ".t.samples.lock").write_text("pid 1234567\n")
    fill(fs, free_kb * 1024)
    unraisable = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    line = check_refused(w, generate(w, None, None, out, "--merge-only"),
                         rf"{fs}/t/[\w.-]+: cannot be written \(No space left on device\)", capsys)
    gc.collect()
    assert not unraisable, [str(u.exc_value) for u in unraisable]
    assert not [p for p in fs.rglob("*.tmp")]
    failed = line.split(": cannot be written")[0].rsplit("/", 1)[1]
    if failed in ("grid.png", "samples.json"):  # samples.npz was complete before the disk was full
        with np.load(out / "samples.npz") as z, np.load(w["samples"]) as ref:
            np.testing.assert_array_equal(z["arr_0"], ref["arr_0"])
    else:
        assert failed in ("config.yaml", "samples.npz") and not (out / "samples.npz").exists()
    print(f"disk full at {failed}")


def test_full_disk_while_encoding_names_the_shard(w, small_fs, capsys, monkeypatch):
    fs = small_fs("full-encode", 64)
    rng = np.random.default_rng(0)
    images = torch.from_numpy(rng.integers(0, 256, (2000, 3, 16, 16), dtype=np.uint8))

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return len(images)

        def __getitem__(self, i):
            return {"image": images[i], "index": i, "label": 0, "caption": ""}

        def description(self):
            return {"dataset": "synthetic", "num_images": len(images)}

    monkeypatch.setattr("drr.data.build_dataset", lambda *a, **k: Images())
    check_refused(w, ("drr.codes.encode", [
        "--config", str(w["config"]), "--tokenizer", str(w["tok"]), "--split", "train",
        "--out", str(fs / "codes"), *sets("tokenizer.encode.rows_per_shard=200")]),
        rf"{fs}/codes\.partial/(part-\d{{5}}\.parquet|_SUCCESS): cannot be written "
        r"\(.*No space left on device\)", capsys)
    assert not (fs / "codes").exists()


def test_a_missing_slurm_client_is_one_line_before_anything_is_submitted(tmp_path):
    """--profile slurm on a machine without SLURM's commands: one error line naming them and the
    package, in seconds, before any job (it was some 60 lines naming only sacct, after 40 s); a dry
    run passes."""
    from workflow_fixtures import SNAKEMAKE, copy_workflow

    cwd = copy_workflow(tmp_path)
    path = tmp_path / "bin"  # the machine's commands, SLURM's taken out
    path.mkdir()
    slurm = {"sbatch", "squeue", "sacct", "scontrol", "sinfo", "srun", "salloc", "scancel",
             "sacctmgr", "sstat", "sprio", "sshare", "sattach", "sbcast", "sdiag", "sreport",
             "strigger", "scrontab"}
    for folder in os.environ["PATH"].split(os.pathsep):
        for cmd in Path(folder).glob("*") if Path(folder).is_dir() else []:
            if cmd.name not in slurm and not os.path.lexists(path / cmd.name):
                (path / cmd.name).symlink_to(cmd)
    env = dict(os.environ, PATH=str(path), PYTHONPATH=str(REPO))
    target = "results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt"
    t0 = time.monotonic()
    r = subprocess.run([*SNAKEMAKE, "--profile", "slurm", "--config", "suite=tiny", "--", target],
                       cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    took = time.monotonic() - t0
    errors = [line for line in r.stderr.splitlines() if line.startswith("error:")]
    assert r.returncode == 2 and len(errors) == 1 and "Traceback" not in r.stderr, r.stderr[-3000:]
    assert errors[0] == (
        "error: executor slurm: SLURM's sbatch, squeue, sacct, scontrol are not on the PATH; "
        "install SLURM's client commands (sbatch, squeue, sacct, scontrol: Debian/Ubuntu package "
        "slurm-client) or drop --profile slurm (or --executor slurm) to run on this machine")
    assert "sacct: error" not in r.stdout + r.stderr and took < 30
    assert not (cwd / "results").exists()
    dry = subprocess.run([*SNAKEMAKE, "--profile", "slurm", "--config", "suite=tiny", "-n", "--",
                          target], cwd=cwd, capture_output=True, text=True, timeout=300, env=env)
    assert dry.returncode == 0, dry.stderr[-3000:]


def test_ar_sampling_stops_on_logits_that_are_not_finite():
    from drr.core.errors import DrrError
    from drr.sampling.ar import ARSettings, sample_raster
    from drr.transformer.build import build_transformer
    from drr.transformer.model import TransformerConfig

    cfg = tiny_config(*SETTINGS, "transformer.model.kind=ar")
    torch.manual_seed(0)
    model = build_transformer(TransformerConfig.from_experiment(cfg))
    settings = ARSettings.from_config(cfg["sampling"])
    cond = torch.zeros(2, 1, dtype=torch.long)
    seeds = torch.arange(2)
    codes = sample_raster(model, cond, settings, seeds)  # finite weights, finite logits: samples
    assert codes.shape == (2, 16, 2)
    with torch.no_grad():
        model.classifier.linear.weight.fill_(1e38)  # finite, but the logits overflow
    with pytest.raises(DrrError, match=r"the transformer's logits hold NaN or inf"):
        sample_raster(model, cond, settings, seeds)


def test_metric_ranges_allow_rounding_only():
    from drr.core.errors import DrrError
    from drr.metrics.score import check_ranges

    row = {"phase": "revised", "samples_path": "s.npz", "reference_id": "r"}
    check_ranges([{**row, "fid": -1e-9, "precision": 0.0, "recall": 1.0}], "m.parquet")
    check_ranges([{**row, "fid": None, "precision": None, "recall": None}], "m.parquet")
    for bad in ({"fid": -0.01}, {"fid": float("nan")}, {"fid": float("inf")},
                {"precision": 1.0000001}, {"recall": -0.5}):
        with pytest.raises(DrrError, match=rf"m\.parquet: metric '{next(iter(bad))}'"):
            check_ranges([{**row, **bad}], "m.parquet")


def test_a_covariance_is_accepted_within_rounding_and_refused_beyond():
    from drr.core.errors import DrrError
    from drr.metrics.reference import check_statistics

    rng = np.random.default_rng(0)
    feats = rng.normal(size=(100, 256))  # fewer samples than dimensions: a singular covariance
    sigma = np.cov(feats, rowvar=False)
    check_statistics("r.npz", feats.mean(0), sigma, feats.astype(np.float32))
    check_statistics("r.npz", feats.mean(0), sigma + 1e-12 * rng.normal(size=sigma.shape))
    v = np.linalg.eigh(sigma)[1][:, 0]
    with pytest.raises(DrrError, match=r"r\.npz: 'sigma' is not positive semi-definite"):
        check_statistics("r.npz", feats.mean(0), sigma - 0.01 * np.outer(v, v) * np.abs(sigma).max())
    with pytest.raises(DrrError, match=r"'mu' holds <U1 values, not numbers"):
        check_statistics("r.npz", np.array(["a"]), sigma)


# --- kills: only the process that started a job is killed ---------------------------------------

def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _parent(pid: int) -> int | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("PPid:")), None)


def _descends_from(pid: int, ancestor: int) -> bool:
    while pid and pid != ancestor:
        pid = _parent(pid)
    return pid == ancestor


def _trainer_pid(parent_pid: int, timeout: float = 60.0) -> int:
    """The python training process under the shell that `parent_pid` started (its descendant:
    another training run on the machine is not it)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for p in Path("/proc").iterdir():
            if p.name.isdigit():
                try:
                    cmd = (p / "cmdline").read_bytes().split(b"\0")
                except OSError:
                    continue
                if (len(cmd) > 2 and cmd[1:3] == [b"-m", b"drr.transformer.train"]
                        and _descends_from(int(p.name), parent_pid)):
                    return int(p.name)
        time.sleep(0.2)
    raise AssertionError("the training process did not start")


def test_killing_only_the_workflow_process_stops_its_trainer(w, tmp_path):
    """A stand-in for Snakemake runs the training command exactly as a rule's shell does
    (bash -c 'set -euo pipefail; python -m ... > log 2>&1'); it is SIGKILLed mid-training. The
    trainer must stop too (saving its state), and the rerun resumes alone: metrics.jsonl steps
    strictly increase and end at the last step."""
    steps = 200
    cfg = tiny_config(*SETTINGS[1:], f"transformer.train.steps={steps}",
                      "transformer.train.checkpoint_every=20")
    config = tmp_path / "config.yaml"
    save_config(cfg, config)
    out = tmp_path / "run/checkpoint.pt"
    cmd = (f"set -euo pipefail; {sys.executable} -m drr.transformer.train --config {config} "
           f"--tokenizer {w['tok']} --codes {w['codes']} --out {out} > {tmp_path}/train.log 2>&1")
    env = dict(os.environ, PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    workflow = subprocess.Popen(
        [sys.executable, "-c", "import subprocess, sys; subprocess.Popen(sys.argv[1], shell=True, "
         "executable='/bin/bash').wait()", cmd], env=env, cwd=REPO)
    trainer = _trainer_pid(workflow.pid)
    metrics = out.parent / "metrics.jsonl"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (metrics.exists() and len(metrics.read_text().splitlines()) >= 5):
        time.sleep(0.2)
    assert metrics.exists(), (tmp_path / "train.log").read_text()[-2000:]
    workflow.send_signal(signal.SIGKILL)
    workflow.wait()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and _alive(trainer):
        time.sleep(0.2)
    log = (tmp_path / "train.log").read_text()
    assert not _alive(trainer), "the trainer outlived the process that started it"
    assert "is gone: stopping" in log, log[-2000:]
    if not out.exists():  # stopped before the end: the rerun resumes from the saved state
        rerun = subprocess.run([sys.executable, "-m", "drr.transformer.train", "--config", str(config),
                                "--tokenizer", str(w["tok"]), "--codes", str(w["codes"]),
                                "--out", str(out)], env=env, cwd=REPO, capture_output=True,
                               text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr[-2000:]
        assert "resuming from" in rerun.stderr and "waiting" not in rerun.stderr
    logged = [json.loads(line)["step"] for line in metrics.read_text().splitlines()]
    assert logged == list(range(1, steps + 1))
    assert torch.load(out, weights_only=True)["kind"] == "drr-transformer"


# --- shell injection: wildcards and quoting --------------------------------------------------------

SHELL_FIELD = re.compile(r"\{([^{}]*)\}")


def shell_templates(text: str) -> list[str]:
    """The string literals of every `shell:` of a rule file and of module-level *_SHELL strings."""
    out, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        line = lines[i]
        start = re.match(r"^(\s*)shell:\s*$", line) or re.match(r"^(_\w*SHELL)\s*=\s*\($", line)
        if start:
            i += 1
            while i < len(lines) and lines[i].strip().startswith(('"', "'")):
                out.append(lines[i].strip())
                i += 1
            continue
        i += 1
    return out


def test_every_shell_quotes_what_it_interpolates():
    found = 0
    for path in sorted((REPO / "workflow/rules").glob("*.smk")):
        for literal in shell_templates(path.read_text()):
            for field in SHELL_FIELD.findall(literal):
                found += 1
                assert field.endswith(":q"), f"{path.name}: {{{field}}} is not quoted (use {{{field}:q}})"
    assert found > 50  # the parser saw the rules' shells


@pytest.mark.parametrize("target", [
    "results/metrics/tiny/x$(touch PWNED)y.parquet",            # an override-file name (issue 15)
    "results/metrics/tiny/t_draft=$(touch PWNED).parquet",      # shell syntax in a variant's value
    "results/samples/tiny/t_draft=8 x/shards/shard-00000.npz",  # a space splits an argument
    "results/metrics/tiny;touch PWNED/default.parquet",          # an experiment name
])
def test_a_target_with_shell_syntax_is_refused_before_any_job(tmp_path, target):
    """The wildcards match only what the plan can make, so no rule matches and nothing runs."""
    from workflow_fixtures import SNAKEMAKE, copy_workflow

    cwd = copy_workflow(tmp_path)
    run = subprocess.run([*SNAKEMAKE, "--cores", "1", target], cwd=cwd, capture_output=True,
                         text=True, timeout=300)
    assert run.returncode != 0
    assert "MissingRuleException" in run.stdout + run.stderr or \
        "No rule to produce" in run.stdout + run.stderr, (run.stdout + run.stderr)[-2000:]
    assert not list(cwd.rglob("PWNED")) and not (cwd / "results").exists()
