"""A random tiny tokenizer and a code map built with it, for transformer and sampler tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from drr.codes.store import CodeMapWriter
from drr.core.config import load_config, override_from_dotted
from drr.core.files import sha256_file

REPO = Path(__file__).resolve().parents[1]

# 4x4x2 codes, K = 32, 3 classes: small enough for many training steps in a test.
TINY_SETTINGS = [
    "tokenizer.model.ch=32", "tokenizer.model.ch_mult=[1, 2, 2]", "tokenizer.model.z_channels=32",
    "tokenizer.model.embed_dim=16", "tokenizer.model.codebook_size=32",
    "tokenizer.model.code_shape=[4, 4, 2]", "data.resolution=16",
    "transformer.model.n_spatial=2", "transformer.model.n_depth=1", "transformer.model.d_model=32",
    "transformer.model.head_dim=16", "transformer.model.cond.num_classes=3",
    "transformer.train.batch_size=8", "transformer.train.warmup_steps=2",
    "transformer.train.log_every=1",
]


def tiny_config(*extra: str) -> dict:
    return load_config(REPO / "configs/experiments/tiny.yaml",
                       override_from_dotted(TINY_SETTINGS + list(extra)))


def make_tokenizer_and_codes(folder: Path, cfg: dict, rows: int = 40, seed: int = 0,
                             captions: list[str] | None = None) -> tuple[Path, Path]:
    """Write a random-weight tokenizer checkpoint and a code map of random codes made 'with' it."""
    from drr.tokenizer.io import save_tokenizer
    from drr.tokenizer.model import RQVAE, RQVAEConfig

    torch.manual_seed(seed)
    tok_path = folder / "tokenizer.pt"
    save_tokenizer(RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])), cfg, tok_path)
    h, w, d = cfg["tokenizer"]["model"]["code_shape"]
    k = cfg["tokenizer"]["model"]["codebook_size"]
    rng = np.random.default_rng(seed)
    # Codes with structure a model can learn: depth-2 codes repeat depth-1 codes, class shifts them.
    labels = rng.integers(0, cfg["transformer"]["model"]["cond"]["num_classes"], rows)
    base = rng.integers(0, k // 2, (rows, h, w, 1))
    codes = np.concatenate([base, (base + labels[:, None, None, None]) % k] * (d // 2) + [base] * (d % 2),
                           axis=-1)[..., :d]
    meta = {"code_shape": [h, w, d], "codebook_size": k, "tokenizer_sha256": sha256_file(tok_path),
            "dataset": "synthetic", "split": "train"}
    out = folder / "codes"
    writer = CodeMapWriter(out, meta, rows_per_shard=1000)
    writer.write(np.arange(rows), codes.astype(np.int16), label=labels, caption=captions)
    writer.finish()
    return tok_path, out
