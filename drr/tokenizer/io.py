"""drr's tokenizer checkpoint: one file with the weights, the config that sizes the network,
the resolved experiment config and provenance. Trained and imported tokenizers share it.
"""

from __future__ import annotations

from pathlib import Path

from drr import checkpoint
from drr.provenance import provenance, sha256_file

KIND = "drr-tokenizer"


def save_tokenizer(model, cfg: dict, path, **extra) -> None:
    checkpoint.save({
        "kind": KIND,
        "model_config": dict(cfg["tokenizer"]["model"]),
        "config": cfg,
        "state_dict": model.state_dict(),
        "provenance": provenance(cfg, **extra),
    }, path)


def load_tokenizer(path, device="cpu"):
    """Return (model in eval mode, checkpoint dict without the weights, sha256 of the file)."""
    from drr.tokenizer.model import RQVAE, RQVAEConfig

    path = Path(path)
    model, ckpt = checkpoint.load_model(
        path, KIND, "tokenizer checkpoint", lambda mc: RQVAE(RQVAEConfig(**mc)),
        "; import official checkpoints with python -m drr.tokenizer.import_official")
    return model.to(device).eval(), ckpt, sha256_file(path)
