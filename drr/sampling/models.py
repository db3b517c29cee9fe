"""Loading a trained transformer for sampling together with the tokenizer it was trained with, each
checked: the tokenizer file must be the one the transformer checkpoint names (sha256), and the
transformer must be the model the config describes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from drr.core.errors import DrrError


@dataclass
class Models:
    """A transformer and its tokenizer on one device, with the files and sha256 they came from."""

    transformer: torch.nn.Module
    tokenizer: torch.nn.Module
    transformer_ckpt: dict
    transformer_sha256: str
    tokenizer_sha256: str
    transformer_path: Path
    tokenizer_path: Path

    @property
    def code_shape(self) -> tuple[int, int, int]:
        return tuple(self.transformer.config.code_shape)


def load_models(tokenizer: Path, transformer: Path, device: torch.device,
                cfg: dict | None = None) -> Models:
    """Load the transformer and its tokenizer; refuse a tokenizer file whose sha256 is not the
    transformer checkpoint's 'tokenizer_sha256', and (given `cfg`) a transformer whose model
    config is not the one `cfg` describes."""
    from drr.tokenizer.io import load_tokenizer
    from drr.transformer.io import load_transformer

    tokenizer, transformer = Path(tokenizer), Path(transformer)
    model, ckpt, tr_sha = load_transformer(transformer, device)
    tok, _, tok_sha = load_tokenizer(tokenizer, device)
    want = ckpt.get("tokenizer_sha256")
    if want != tok_sha:
        raise DrrError(f"{tokenizer}: sha256 {tok_sha[:16]}… is not field 'tokenizer_sha256' "
                       f"{str(want)[:16]}… of {transformer}; pass the tokenizer the transformer "
                       f"was trained with")
    if cfg is not None:
        check_model_config(model, cfg, transformer)
    return Models(model, tok, ckpt, tr_sha, tok_sha, transformer, tokenizer)


def check_model_config(model, cfg: dict, path: Path) -> None:
    """The config's transformer.model/tokenizer.model sizes must be the checkpoint's (dropout aside:
    it does nothing at inference)."""
    from drr.transformer.model import TransformerConfig

    want = TransformerConfig.from_experiment(cfg).to_dict()
    have = model.config.to_dict()
    for key in want:
        if key != "dropout" and want[key] != have.get(key):
            raise DrrError(f"{path}: model_config '{key}' is {have.get(key)!r}, the config gives "
                           f"{want[key]!r}; pass the config the transformer was trained with")
