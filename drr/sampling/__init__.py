"""Draft-and-Revise decoding (paper §3.3, Algorithms 1-2): see drr.sampling.decode."""

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

__all__ = ["DecodeSettings", "PhaseSettings", "balanced_partition", "draft_and_revise",
           "filter_logits", "guide", "sample_categorical", "sample_seeds", "update"]
