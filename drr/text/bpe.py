"""The caption BPE: byte-level BPE trained on a dataset's captions (not the image tokenizer).

The paper feeds the text-to-image transformer 32 text tokens from a BPE tokenizer with a
16,384-token vocabulary (the official RQ-Transformer does so for CC-3M). This is a HuggingFace
`tokenizers` byte-level BPE of that size trained on the captions themselves:

* normalisation: NFKC, lowercase, strip surrounding whitespace;
* byte-level pre-tokenisation with a prefix space, so a word is the same token at the start of a
  caption as in its middle; the 256 byte symbols are always in the vocabulary, so every caption
  encodes without an unknown token (hence no "[UNK]") and decoding gives back the normalised text;
* one special token, "[PAD]", with id 0: `encode` truncates to `length` tokens and right-pads
  with it, and `decode` drops it.

The whole caption BPE (normaliser, merges, vocabulary) is one JSON file; its sha256 goes into the
provenance of what is built on it. Training on a small corpus can stop below the requested
vocabulary size: `vocab_size` reports the real size. The configured text vocabulary of a model
(which sizes its embedding) is an upper bound on it, checked with `check_vocab`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from drr.core.errors import DrrError
from drr.core.files import atomic_path

PAD_TOKEN = "[PAD]"
# A byte-level BPE starts from the 256 byte symbols and [PAD], before any merge.
MIN_VOCAB_SIZE = len(pre_tokenizers.ByteLevel.alphabet()) + 1


def check_vocab_size(vocab_size: int, source: str = "vocab_size") -> None:
    """Refuse a vocabulary size too small for a byte-level BPE (`source` names the setting)."""
    if vocab_size < MIN_VOCAB_SIZE:
        raise DrrError(f"{source} {vocab_size}: a byte-level BPE starts with {MIN_VOCAB_SIZE} "
                       f"tokens (256 bytes and {PAD_TOKEN}); ask for more")


class CaptionBPE:
    """Byte-level BPE over normalised captions; ids are in [0, vocab_size), 0 is padding."""

    PAD_ID = 0

    def __init__(self, tokenizer: Tokenizer):
        self._tok = tokenizer

    @classmethod
    def train(cls, captions: Iterable[str], vocab_size: int = 16384,
              min_frequency: int = 2) -> CaptionBPE:
        """Learn merges from `captions` until `vocab_size` tokens or no pair occurs `min_frequency`
        times. Deterministic: the same captions give the same JSON."""
        check_vocab_size(vocab_size)
        tok = Tokenizer(models.BPE())
        tok.normalizer = normalizers.Sequence(
            [normalizers.NFKC(), normalizers.Lowercase(), normalizers.Strip()])
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=True)
        tok.decoder = decoders.ByteLevel()
        # The library's progress bars redraw one line with carriage returns, which turns into an
        # unreadable line in a log file; the CLI reports what it did instead.
        trainer = trainers.BpeTrainer(vocab_size=vocab_size, min_frequency=min_frequency,
                                      special_tokens=[PAD_TOKEN],
                                      initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                      show_progress=False)
        tok.train_from_iterator(captions, trainer)
        return cls(tok)

    @classmethod
    def load(cls, path) -> CaptionBPE:
        """Read a caption BPE's JSON written by `save`; DrrError naming the file if it is not one."""
        path = Path(path)
        if not path.is_file():
            raise DrrError(f"{path}: no such file; train one with python -m drr.text.train_bpe")
        try:
            tok = Tokenizer.from_str(path.read_text(encoding="utf-8"))
        except Exception as e:  # the Rust library raises a bare Exception for any parse error
            reason = " ".join(str(e).split())
            raise DrrError(f"{path}: not a tokenizers JSON file ({reason})") from None
        pad = tok.token_to_id(PAD_TOKEN)
        if pad != cls.PAD_ID:
            raise DrrError(f"{path}: token '{PAD_TOKEN}' has id {pad}, expected {cls.PAD_ID}; "
                           "not a drr text tokenizer")
        return cls(tok)

    def _json(self) -> str:
        return self._tok.to_str()

    def save(self, path) -> None:
        """Write the JSON atomically (temporary file renamed into place)."""
        with atomic_path(path) as tmp:
            tmp.write_text(self._json(), encoding="utf-8")

    def sha256(self) -> str:
        """sha256 of the serialised JSON: the same as that of the file `save` writes."""
        return hashlib.sha256(self._json().encode("utf-8")).hexdigest()

    @property
    def vocab_size(self) -> int:
        """The number of tokens actually learned (at most the size asked for in `train`)."""
        return self._tok.get_vocab_size(with_added_tokens=True)

    def check_vocab(self, configured: int, source: str) -> None:
        """Refuse a caption BPE whose ids do not fit an embedding of `configured` rows.

        `source` names the file and field that configured the size, e.g.
        "configs/cc3m.yaml: key 'model.text_vocab_size'".
        """
        if self.vocab_size > configured:
            raise DrrError(f"{source}: text vocabulary size {configured} is smaller than the "
                           f"tokenizer's {self.vocab_size} tokens; raise it to at least "
                           f"{self.vocab_size} or retrain the tokenizer with --vocab-size "
                           f"{configured}")

    def encode(self, captions: Sequence[str], length: int = 32) -> np.ndarray:
        """(B, length) int64 ids, each caption truncated to `length` tokens and right-padded."""
        if isinstance(captions, str):
            raise TypeError("encode takes a sequence of captions, not one string")
        encodings = self._tok.encode_batch(list(captions), add_special_tokens=False)
        out = np.full((len(encodings), length), self.PAD_ID, dtype=np.int64)
        for row, enc in zip(out, encodings):
            ids = enc.ids[:length]
            row[:len(ids)] = ids
        return out

    def decode(self, ids) -> str:
        """The normalised text of one row of ids, padding ignored."""
        ids = np.asarray(ids)
        if ids.ndim != 1:
            raise ValueError(f"decode takes one row of ids, got shape {ids.shape}")
        text = self._tok.decode([int(i) for i in ids if i != self.PAD_ID])
        return text.removeprefix(" ")  # the prefix space added by the pre-tokenizer
