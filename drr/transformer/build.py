"""The transformer a config names (`kind`: contextual or ar), built, and its parameter count."""

from __future__ import annotations

import torch

from drr.transformer.ar import ARRQTransformer
from drr.transformer.model import ContextualRQTransformer, RQTransformerBase, TransformerConfig


def build_transformer(config: TransformerConfig, code_embeddings: torch.Tensor | None = None
                      ) -> RQTransformerBase:
    """The model `config.kind` names: ContextualRQTransformer or ARRQTransformer."""
    if config.kind == "ar":
        return ARRQTransformer(config, code_embeddings)
    return ContextualRQTransformer(config, code_embeddings)


def count_parameters(config: TransformerConfig) -> int:
    """Trainable parameters of the model `config.kind` names, computed on the meta device (no
    weights allocated)."""
    with torch.device("meta"):
        model = build_transformer(config)
    return sum(p.numel() for p in model.parameters())
