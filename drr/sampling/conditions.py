"""The condition of every sample of a generation run (a class label, a tokenised caption, or none),
a pure function of the sample's global index, so that samples do not depend on batches or shards.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from drr.core.errors import DrrError


class Conditions:
    """Per-sample conditions of a generation run, a pure function of the global sample index.

    class + balanced: class i % num_classes; text + eval_captions: caption i % n of a code map,
    tokenised with the caption BPE (drr.text.bpe); cond type none: zeros.
    """

    def __init__(self, cfg: dict, caption_bpe: Path | None = None, captions: Path | None = None):
        cond = cfg["transformer"]["model"]["cond"]
        mode = cfg["generation"]["conditions"]
        self.type = cond["type"]
        self.num_classes = cond["num_classes"]
        self.captions: list[str] | None = None
        self.tokens: np.ndarray | None = None
        self.source: dict = {"type": self.type, "conditions": mode}
        if self.type == "class":
            if mode != "balanced":
                raise DrrError(f"generation.conditions: {mode!r} is for text models; "
                               "class-conditional models use 'balanced'")
        elif self.type == "text":
            if mode != "eval_captions":
                raise DrrError(f"generation.conditions: {mode!r} is for class models; "
                               "text-conditional models use 'eval_captions'")
            if caption_bpe is None or captions is None:
                raise DrrError("transformer.model.cond.type is 'text': pass --text-tokenizer "
                               "and --captions (the eval split's code map)")
            from drr.codes.store import CodeMap
            from drr.core.files import sha256_file
            from drr.text import CaptionBPE

            bpe = CaptionBPE.load(caption_bpe)
            bpe.check_vocab(cond["vocab_size"], "transformer.model.cond.vocab_size")
            self.captions = CodeMap(captions).captions
            if not self.captions or not any(self.captions):
                raise DrrError(f"{captions}: field 'caption' is empty; eval_captions needs "
                               "a code map with captions")
            self.tokens = bpe.encode(self.captions, cond["length"])
            # the caption BPE under the keys that finished sample sets' records have
            self.source.update(captions=str(captions), num_captions=len(self.captions),
                               text_tokenizer=str(caption_bpe),
                               text_tokenizer_sha256=sha256_file(caption_bpe))

    def __call__(self, indices: np.ndarray) -> torch.Tensor:
        """(B, L) int64 conditions of the samples with these global indices."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.type == "class":
            return torch.from_numpy(indices % self.num_classes)[:, None]
        if self.type == "text":
            return torch.from_numpy(self.tokens[indices % len(self.tokens)])
        return torch.zeros(len(indices), 1, dtype=torch.long)

    def labels(self, indices: np.ndarray) -> np.ndarray | None:
        if self.type != "class":
            return None
        return (np.asarray(indices, dtype=np.int64) % self.num_classes).astype(np.int64)

    def caption_texts(self, indices: np.ndarray) -> np.ndarray | None:
        if self.type != "text":
            return None
        return np.array([self.captions[i % len(self.captions)] for i in indices], dtype=str)
