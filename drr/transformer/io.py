"""drr's transformer checkpoint: weights (code embeddings included), the model config (its 'kind':
contextual or ar; absent in older files: contextual), the resolved experiment config, the sha256 of
the tokenizer whose codes it models, whether the null condition was trained ('null_condition'; False
for an imported official RQ-Transformer; absent: True), and provenance."""

from __future__ import annotations

from pathlib import Path

import torch

from drr import checkpoint
from drr.errors import DrrError
from drr.provenance import provenance, sha256_file

KIND = "drr-transformer"


def save_transformer(model, cfg: dict, path, tokenizer_sha256: str, **extra) -> None:
    checkpoint.save({
        "kind": KIND,
        "model_config": model.config.to_dict(),
        "config": cfg,
        "tokenizer_sha256": tokenizer_sha256,
        "null_condition": bool(getattr(model, "has_null_condition", True)),
        "state_dict": model.state_dict(),
        "provenance": provenance(cfg, **extra),
    }, path)


def load_transformer(path, device="cpu"):
    """Return (model in eval mode, of the kind its model_config names; checkpoint dict without the
    weights; sha256 of the file)."""
    from drr.transformer.model import TransformerConfig, build_transformer

    path = Path(path)
    if not path.exists():
        raise DrrError(f"{path}: transformer checkpoint not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise DrrError(f"{path}: field 'kind' is not '{KIND}'")
    model = build_transformer(TransformerConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt.pop("state_dict"))
    model.has_null_condition = bool(ckpt.get("null_condition", True))
    return model.to(device).eval(), ckpt, sha256_file(path)
