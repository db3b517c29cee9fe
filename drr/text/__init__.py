"""Text conditioning for image-caption experiments (CC-3M, COCO): the caption BPE.

The paper conditions text-to-image models on 32 text tokens from a BPE tokenizer with a
16,384-token vocabulary trained on the dataset's captions. Here it is the *caption BPE*, so that
"tokenizer" means the image tokenizer (the RQ-VAE or VQ-VAE of drr.tokenizer) alone; the config
key `tokenizer.name` also names the caption BPE trained on that tokenizer's code maps
(results/text/<tokenizer>/bpe.json), and the commands take it as `--text-tokenizer`.

    drr.text.bpe        CaptionBPE: byte-level BPE; train, save/load, encode to (B, 32) ids
    drr.text.train_bpe  `python -m drr.text.train_bpe`: train it on a code map's captions
"""

from drr.text.bpe import CaptionBPE

__all__ = ["CaptionBPE"]
