"""drr's tokenizer checkpoint: one file with the weights, the config that sizes the network,
the resolved experiment config and provenance. Trained and imported tokenizers share it.
"""

from __future__ import annotations

from pathlib import Path

import torch

from drr import checkpoint
from drr.errors import DrrError
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
    if not path.exists():
        raise DrrError(f"{path}: tokenizer checkpoint not found")
    ckpt = torch.load(path, map_location="cpu", weights_only=False)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != KIND:
        raise DrrError(f"{path}: field 'kind' is not '{KIND}'; import official checkpoints with "
                       "python -m drr.tokenizer.import_official")
    model = RQVAE(RQVAEConfig(**ckpt["model_config"]))
    model.load_state_dict(ckpt.pop("state_dict"))
    return model.to(device).eval(), ckpt, sha256_file(path)
