"""drr's tokenizer checkpoint: one file with the weights, the config that sizes the network,
the resolved experiment config and provenance. Trained and imported tokenizers share it.
"""

from __future__ import annotations

from pathlib import Path

from drr.core import checkpoint
from drr.core.errors import DrrError
from drr.core.files import sha256_file
from drr.core.provenance import provenance

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


def shared_code_embeddings(model, path):
    """(K, n_z) code embeddings a transformer starts from: the tokenizer's one shared codebook.
    A tokenizer with a codebook per depth (``shared_codebook: false``) is refused, naming the file:
    the transformer embeds the codes of every depth with one table, so the other depths' codes
    would silently get depth 0's vectors."""
    if not model.config.shared_codebook:
        raise DrrError(f"{path}: field 'model_config.shared_codebook' is false; the transformer "
                       "embeds every depth's codes with one codebook, so it needs a tokenizer "
                       "with a shared codebook (tokenizer.model.shared_codebook: true)")
    return model.quantizer.codebook_weights(0)
