"""Import and export of autoregressive RQ-Transformer weights in the official checkpoint layout.

The official RQ-Transformer checkpoints (github.com/kakaobrain/rq-vae-transformer; keys and shapes
of the ImageNet 821M and 1.4B and the CC-3M 654M models in
shared/reference/official-checkpoint-keys/*-rqtransformer-*.txt) are ``torch.save({'state_dict':
...})`` files whose keys are those of drr's ``ARRQTransformer`` with two differences:

* no ``code_emb``: the official model reads the RQ-VAE's codebook at run time; here it comes from
  the drr tokenizer checkpoint the experiment names (its codebook of depth 0, shared by all depths);
* ``cond_emb.weight`` has no null row (cond_vocab rows, not cond_vocab + 1): the official model
  has no classifier-free guidance. On import the null row is zero and the model is marked
  ``has_null_condition = False``; guided sampling refuses it.

`load_official` checks a file against the config strictly (a missing, extra or mis-shaped key, or
a tensor that is not finite, is a one-line DrrError naming the file and the key), like the RQ-VAE
import in drr/tokenizer/official.py.
"""

from __future__ import annotations

import os

import torch

from drr.core.checkpoint import adopt_state_dict, check_keys_and_shapes, read_official_state_dict
from drr.core.errors import DrrError
from drr.core.files import atomic_path
from drr.tokenizer.io import check_finite
from drr.transformer.build import build_transformer
from drr.transformer.model import TransformerConfig

NOT_OFFICIAL = ("code_emb",)  # drr keys the official layout does not have


def _check_kind(config: TransformerConfig) -> None:
    if config.kind != "ar":
        raise DrrError(f"transformer.model.kind: the official RQ-Transformer layout is an 'ar' "
                       f"model's, this config is {config.kind!r}")


def official_state_dict(model) -> dict[str, torch.Tensor]:
    """The AR model's weights in the official layout: without ``code_emb``, and ``cond_emb.weight``
    without the null row (tensors detached, on the CPU; a meta-device model's stay meta)."""
    _check_kind(model.config)
    out = {}
    for key, value in model.state_dict().items():
        if key in NOT_OFFICIAL:
            continue
        if key == "cond_emb.weight":
            value = value[:model.config.cond_vocab]
        out[key] = value.detach() if value.is_meta else value.detach().cpu()
    return out


def official_shapes(config: TransformerConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the official checkpoint of an AR model of this config (meta device)."""
    _check_kind(config)
    with torch.device("meta"):
        model = build_transformer(config)
    return {k: tuple(v.shape) for k, v in official_state_dict(model).items()}


def save_official(model, path) -> None:
    """Write ``{'state_dict': official_state_dict(model)}`` to `path` atomically."""
    state_dict = {k: v.clone() for k, v in official_state_dict(model).items()}
    with atomic_path(path) as tmp:
        torch.save({"state_dict": state_dict}, tmp)


def read_state_dict(path) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of a checkpoint file (tensors on the CPU), or DrrError naming the file."""
    return read_official_state_dict(path, "RQ-Transformer")


def check_state_dict(state_dict: dict, expected: dict[str, tuple[int, ...]], path) -> None:
    """Raise DrrError unless `state_dict` has exactly the keys and shapes of `expected`."""
    check_keys_and_shapes(state_dict, expected, path, "transformer")


def load_official(path: str | os.PathLike, config: TransformerConfig,
                  code_embeddings: torch.Tensor) -> torch.nn.Module:
    """Load an official-layout RQ-Transformer checkpoint, strictly checked against `config` (kind
    'ar'), with the tokenizer's codebook as code embeddings; eval mode, float32,
    ``has_null_condition`` False.

    Raises DrrError (naming the file and the key) on a missing key, an unexpected key, a shape
    mismatch or a tensor that holds NaN or inf.
    """
    _check_kind(config)
    state_dict = read_state_dict(path)
    check_state_dict(state_dict, official_shapes(config), path)
    check_finite(state_dict.items(), path)
    k, nz = config.codebook_size, config.embed_dim
    if code_embeddings.shape[0] < k or code_embeddings.shape[1] != nz:
        raise DrrError(f"tokenizer codebook has shape {tuple(code_embeddings.shape)}, the "
                       f"transformer expects at least ({k}, {nz})")
    with torch.device("meta"):
        model = build_transformer(config)  # no memory for the weights: they come from the file
    # Adopt the file's tensors (as float32) instead of copying them into freshly allocated ones.
    state_dict = {key: v if v.dtype == torch.float32 else v.float() for key, v in state_dict.items()}
    cond = state_dict["cond_emb.weight"]
    state_dict["cond_emb.weight"] = torch.cat([cond, cond.new_zeros(1, cond.shape[1])])  # null row
    state_dict["code_emb"] = code_embeddings[:k].detach().to("cpu", torch.float32).clone()
    adopt_state_dict(model, state_dict, path)
    model.has_null_condition = False
    return model
