"""Sampling stage: code maps from a trained transformer, decoded to images (paper §3.3, §4).

    sampler      the entry point: the model's sampler by `transformer.model.kind` (Draft-and-Revise
                 or raster order), its settings and checks, and the precision sampling runs in
    decode       Draft-and-Revise (Algorithms 1-2, eq. 12-14): partitions, UPDATE, guidance,
                 per-sample seeds; a hook at the phase boundaries
    ar           raster-order sampling of the autoregressive RQ-Transformer, with key/value caches
    models       a transformer and the tokenizer it was trained with, loaded and checked
    conditions   each sample's condition (class, caption or none) from its global index
    images       code maps to uint8 images through the tokenizer's decoder, in fp32
    grid         PNG grids of images
    generate     CLI: samples in resumable shards, merged into the ADM evaluator's samples.npz
    speed        CLI: s/sample split into draft, revise and decode (Table 4)
    inpaint      CLI: inpainting figure (App. D, Figure 1)
    steps        CLI: FID against training steps, over a run's weight snapshots

Where a job computes and its autocast are drr.core.device's.
"""

from drr.sampling.decode import (
                                 DecodeSettings,
                                 PhaseSettings,
                                 balanced_partition,
                                 draft_and_revise,
                                 filter_logits,
                                 guide,
                                 sample_categorical,
                                 sample_seeds,
                                 update,
)
from drr.sampling.sampler import inpaint_codes, sample_codes, sampling_settings

__all__ = ["DecodeSettings", "PhaseSettings", "balanced_partition", "draft_and_revise",
           "filter_logits", "guide", "inpaint_codes", "sample_categorical", "sample_codes",
           "sample_seeds", "sampling_settings", "update"]
