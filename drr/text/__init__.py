"""Text conditioning for image-caption experiments (CC-3M, COCO).

The paper conditions text-to-image models on 32 text tokens from a BPE tokenizer with a
16,384-token vocabulary trained on the dataset's captions.

    drr.text.bpe        TextTokenizer: byte-level BPE; train, save/load, encode to (B, 32) ids
    drr.text.train_bpe  `python -m drr.text.train_bpe`: train it on a code map's captions
"""

from drr.text.bpe import TextTokenizer

__all__ = ["TextTokenizer"]
