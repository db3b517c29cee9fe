"""The sampling package's entry point: one call that samples code maps with the model's own sampler,
whatever its kind, and the precision sampling runs in.

`transformer.model.kind` picks the sampler: a Contextual RQ-Transformer ('contextual') decodes with
Draft-and-Revise (drr.sampling.decode, settings ``DecodeSettings`` from the `sampling` section), the
autoregressive RQ-Transformer ('ar') in raster order (drr.sampling.ar, settings ``ARSettings`` from
`sampling.ar`). generate, speed, inpaint and the report pictures all sample through here.

Precision (`sampling.precision`): 'fp32' or 'bf16' (autocast) for the transformer; on CUDA the fp32
matmuls and convolutions inside the block use TF32 (drr.core.device.autocast). The tokenizer decode
(drr.sampling.images) disables autocast and runs outside the block, so it stays fp32 and a code map
decodes to the same pixels whatever the sampling precision.
"""

from __future__ import annotations

import copy
from typing import Sequence

import torch

from drr.core.device import autocast
from drr.core.errors import DrrError
from drr.sampling.ar import ARSettings, sample_raster
from drr.sampling.decode import DecodeSettings, draft_and_revise

PRECISIONS = ("fp32", "bf16")


def _kind(cfg: dict) -> str:
    """'contextual' or 'ar', from a resolved config."""
    return cfg["transformer"]["model"].get("kind", "contextual")


def sampling_settings(cfg: dict) -> DecodeSettings | ARSettings:
    """DecodeSettings (contextual) or ARSettings (ar) from a resolved config, checked."""
    if _kind(cfg) == "ar":
        settings = ARSettings.from_config(cfg["sampling"])
        settings.depth_filters(cfg["tokenizer"]["model"]["code_shape"][2])
        return settings
    return DecodeSettings.from_config(cfg["sampling"])


def check_generation(cfg: dict) -> None:
    """Generation settings an AR model cannot honour: a one-line DrrError naming the key."""
    if _kind(cfg) == "ar" and cfg["generation"]["save_drafts"]:
        raise DrrError("generation.save_drafts: true, but transformer.model.kind is 'ar': an "
                       "autoregressive model makes no draft")


def check_positions(settings, n_positions: int) -> None:
    """Draft-and-Revise's parts-vs-positions check; nothing to check for raster order."""
    if not isinstance(settings, ARSettings):
        settings.check_positions(n_positions)


def with_precision(cfg: dict, value: str | None) -> dict:
    """`cfg` with `sampling.precision` set to `value` (a --precision option, so that the saved
    config, the stage hashes and the records say it); `cfg` itself for None."""
    if value is None:
        return cfg
    if value not in PRECISIONS:
        raise DrrError(f"--precision: {value!r} is not one of {', '.join(PRECISIONS)}")
    cfg = copy.deepcopy(cfg)
    cfg["sampling"]["precision"] = value
    return cfg


def precision(cfg: dict, device: torch.device):
    """The context the transformer samples in: `sampling.precision` on `device` (module docstring)."""
    value = cfg["sampling"]["precision"]
    if value not in PRECISIONS:
        raise DrrError(f"sampling.precision: {value!r} is not one of {', '.join(PRECISIONS)}")
    return autocast(device, value, tf32=True, key="sampling.precision")


def sample_codes(model, cond: torch.Tensor, settings, seeds: torch.Tensor, on_phase=None
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Full-image generation with the model's sampler: (codes, draft) from Draft-and-Revise, or
    (codes, None) from raster-order sampling. ``on_phase(name)`` is called as each phase ends:
    'draft' and 'revise' (Draft-and-Revise), or 'ar' (raster order)."""
    if model.config.kind == "ar":
        codes = sample_raster(model, cond, settings, seeds)
        if on_phase is not None:
            on_phase("ar")
        return codes, None
    return draft_and_revise(model, cond, settings, seeds, return_draft=True, on_phase=on_phase)


def inpaint_codes(model, codes: torch.Tensor, region: torch.Tensor, cond: torch.Tensor, settings,
                  seeds: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Generate the `region` of `codes` with the model's sampler (Draft-and-Revise on the region,
    or raster order given what precedes each position)."""
    if model.config.kind == "ar":
        return sample_raster(model, cond, settings, seeds, region=region, init_codes=codes)
    return draft_and_revise(model, cond, settings, seeds, region=region, init_codes=codes)
