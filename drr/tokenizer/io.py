"""drr's tokenizer checkpoint: one file with the weights, the config that sizes the network,
the resolved experiment config and provenance. Trained and imported tokenizers share it.

Weights are checked finite when they are read (`check_finite`, also used for transformer files and
the official imports): a NaN in a network gives no error downstream, only wrong results (all-zero
code maps, samples of one code), so a file that holds one is refused in one line naming the file
and the first tensor that is not finite.
"""

from __future__ import annotations

from pathlib import Path

import torch

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
    model = model.to(device).eval()
    check_finite(model.state_dict().items(), path)  # on the device: fast on a GPU
    return model, ckpt, sha256_file(path)


def check_finite(tensors, path, field: str = "state_dict") -> None:
    """DrrError naming `path` and the first of the (name, tensor) pairs whose floating-point values
    are not all finite (NaN or inf); tensors on the meta device are skipped."""
    for name, t in tensors:
        if isinstance(t, torch.Tensor) and not t.is_meta and (t.is_floating_point() or t.is_complex()) \
                and not bool(torch.isfinite(t).all()):
            raise DrrError(f"{path}: field '{field}' tensor '{name}' holds NaN or inf; the weights "
                           f"are damaged (or their training diverged), so every result made with "
                           f"them would be wrong")


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
