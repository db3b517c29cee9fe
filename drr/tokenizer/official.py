"""Import and export of RQ-VAE weights in the official checkpoint layout.

The official RQ-VAE checkpoints (github.com/kakaobrain/rq-vae-transformer) are
``torch.save({'state_dict': ..., ...})`` files whose state-dict keys are exactly those of `RQVAE`
(listed for the ImageNet model in shared/reference/official-checkpoint-keys/in256-rqvae-8x8x4.txt).
`load_official` checks a file against the config strictly and names the offending key; it builds
the model on the meta device and adopts the file's tensors, so the weights are held in memory once.
"""

from __future__ import annotations

import os

import torch

from drr.core.checkpoint import adopt_state_dict, check_keys_and_shapes, read_official_state_dict
from drr.core.errors import DrrError
from drr.core.files import atomic_path
from drr.tokenizer.model import RQVAE, RQVAEConfig


def save_official(model: RQVAE, path) -> None:
    """Write ``{'state_dict': model.state_dict()}`` to `path` atomically."""
    on_cpu: dict[tuple, torch.Tensor] = {}  # aliases (a shared codebook) stay one tensor in the file
    state_dict = {}
    for key, value in model.state_dict().items():
        view = (value.device, value.untyped_storage().data_ptr(), value.storage_offset(),
                tuple(value.shape), value.stride(), value.dtype)
        if view not in on_cpu:
            on_cpu[view] = value.detach().cpu()
        state_dict[key] = on_cpu[view]
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state_dict}, tmp)


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a checkpoint file (tensors on the CPU), or DrrError naming the file."""
    return read_official_state_dict(path, "RQ-VAE")


def check_state_dict(state_dict: dict, expected: dict, path, shared_depth: int = 0) -> None:
    """Raise DrrError unless `state_dict` has exactly the keys and shapes of `expected`.

    With ``shared_depth = D > 1`` (a shared codebook), the D ``quantizer.codebooks.{d}.*`` entries
    must also hold equal values, since the model keeps them as one tensor.
    """
    check_keys_and_shapes(state_dict, {k: tuple(v.shape) for k, v in expected.items()}, path,
                          "tokenizer")

    for d in range(1, shared_depth):
        for name in ("weight", "cluster_size_ema", "embed_ema"):
            first, key = f"quantizer.codebooks.0.{name}", f"quantizer.codebooks.{d}.{name}"
            if not torch.equal(state_dict[key], state_dict[first]):
                raise DrrError(f"{path}: key '{key}' differs from '{first}', but the config has one "
                               f"shared codebook (tokenizer.model.shared_codebook: true)")


def load_official(path: str | os.PathLike, cfg: RQVAEConfig) -> RQVAE:
    """Load an official-layout RQ-VAE checkpoint, strictly checked against `cfg`; eval mode.

    Raises DrrError (naming the file and the key) on a missing key, an unexpected key, a shape
    mismatch, or shared-codebook entries that differ.
    """
    state_dict = read_state_dict(path)
    with torch.device("meta"):
        model = RQVAE(cfg)  # no memory for the weights: they come from the file
    expected = model.state_dict()
    check_state_dict(state_dict, expected, path,
                     shared_depth=cfg.depth if cfg.shared_codebook else 0)

    # Adopt the file's tensors (as float32, the model's dtype) instead of copying into new ones.
    # A shared codebook module is assigned D times; it keeps the last, equal, tensors.
    state_dict = {k: v if v.dtype == expected[k].dtype else v.to(expected[k].dtype)
                  for k, v in state_dict.items()}
    return adopt_state_dict(model, state_dict, path)
