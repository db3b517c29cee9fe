"""Train the caption BPE (drr.text.bpe) on the captions of a code map.

    python -m drr.text.train_bpe --codes results/codes/<tokenizer>/cc3m/train \
        --vocab-size 16384 --out results/text/cc3m-bpe16k.json

The captions come from the training split's code map, so the text vocabulary is learned from
exactly the captions the transformer is trained on. Empty captions are skipped; a code map with no
caption at all (an image-only dataset) is refused. The JSON is written atomically; what was done
(captions read, vocabulary size obtained, time, sha256) is reported on stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from drr.codes.store import CodeMap
from drr.core.errors import DrrError, user_errors
from drr.text.bpe import CaptionBPE, check_vocab_size


def train_bpe(codes: Path, vocab_size: int, min_frequency: int, out: Path) -> CaptionBPE:
    """Train on the non-empty captions of the code map `codes` and save the JSON to `out`."""
    check_vocab_size(vocab_size, "--vocab-size")  # before the (long) read of the code map
    t0 = time.monotonic()
    captions = CodeMap(codes).captions
    kept = [c for c in captions if c.strip()]
    if not kept:
        raise DrrError(f"{codes}: field 'caption' is empty in all {len(captions)} rows; a text "
                       "tokenizer needs the code map of an image-caption dataset")
    print(f"read {len(captions)} captions from {codes} ({len(captions) - len(kept)} empty, "
          "skipped)", file=sys.stderr, flush=True)
    bpe = CaptionBPE.train(kept, vocab_size=vocab_size, min_frequency=min_frequency)
    print(f"trained byte-level BPE: {bpe.vocab_size} tokens (asked for {vocab_size}, "
          f"min frequency {min_frequency}) in {time.monotonic() - t0:.1f}s",
          file=sys.stderr, flush=True)
    bpe.save(out)
    print(f"wrote {out} (sha256 {bpe.sha256()})", file=sys.stderr)
    return bpe


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--codes", required=True, type=Path, help="finished code map folder")
    p.add_argument("--vocab-size", type=int, default=16384, help="tokens to learn, at most")
    p.add_argument("--min-frequency", type=int, default=2,
                   help="a pair is merged only if it occurs this many times")
    p.add_argument("--out", required=True, type=Path, help="the caption BPE's JSON to write")
    args = p.parse_args(argv)
    with user_errors():
        train_bpe(args.codes, args.vocab_size, args.min_frequency, args.out)


if __name__ == "__main__":
    main()
