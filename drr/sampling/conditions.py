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
    tokenised with the BPE tokenizer; cond type none: zeros.
    """

    def __init__(self, cfg: dict, text_tokenizer: Path | None = None, captions: Path | None = None):
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
            if text_tokenizer is None or captions is None:
                raise DrrError("transformer.model.cond.type is 'text': pass --text-tokenizer "
                               "and --captions (the eval split's code map)")
            from drr.codes.store import CodeMap
            from drr.core.files import sha256_file
            from drr.text import TextTokenizer

            tok = TextTokenizer.load(text_tokenizer)
            tok.check_vocab(cond["vocab_size"], "transformer.model.cond.vocab_size")
            self.captions = CodeMap(captions).captions
            if not self.captions or not any(self.captions):
                raise DrrError(f"{captions}: field 'caption' is empty; eval_captions needs "
                               "a code map with captions")
            self.tokens = tok.encode(self.captions, cond["length"])
            self.source.update(captions=str(captions), num_captions=len(self.captions),
                               text_tokenizer=str(text_tokenizer),
                               text_tokenizer_sha256=sha256_file(text_tokenizer))

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
