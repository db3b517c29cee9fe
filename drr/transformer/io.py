"""drr's transformer checkpoint: weights (code embeddings included), the model config (its 'kind':
contextual or ar; absent in older files: contextual), the resolved experiment config, the sha256 of
the tokenizer whose codes it models, whether the null condition was trained ('null_condition'; False
for an imported official RQ-Transformer; absent: True), and provenance. Weights that are not all
finite are refused when read (drr.tokenizer.io.check_finite)."""

from __future__ import annotations

from pathlib import Path

from drr.core import checkpoint
from drr.core.files import sha256_file
from drr.core.provenance import provenance
from drr.tokenizer.io import check_finite

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
    from drr.transformer.build import build_transformer
    from drr.transformer.model import TransformerConfig

    path = Path(path)
    model, ckpt = checkpoint.load_model(path, KIND, "transformer checkpoint",
                                        lambda mc: build_transformer(TransformerConfig(**mc)))
    model = model.to(device).eval()
    check_finite(model.state_dict().items(), path)  # on the device: fast on a GPU
    model.has_null_condition = bool(ckpt.get("null_condition", True))
    return model, ckpt, sha256_file(path)
