"""Encode a dataset split with a tokenizer into a Parquet code map (see drr.codes.store).

    python -m drr.codes.encode --config configs/experiments/tiny.yaml \
        --tokenizer results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt --split train \
        --out results/codes/tiny-fmnist-rq8x8x4/fashion-mnist/train

Shards are written under <out>.partial/ and the folder is renamed to <out> when complete; a killed
run resumes after the last finished shard when the same command is run again (a damaged shard, or
one left by a run with another tokenizer or data, is removed and made again: drr.codes.store).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import torch

from drr.codes.store import CodeMapWriter, partial_folder
from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.lock import hold
from drr.core.progress import Progress
from drr.core.provenance import provenance


@torch.no_grad()
def encode_split(cfg: dict, tokenizer_path: Path, split: str, out: Path) -> Path:
    from drr.data import build_dataset, collate, describe
    from drr.tokenizer.io import load_tokenizer
    from drr.tokenizer.train import to_model_range

    if os.path.lexists(out):
        raise DrrError(f"{out}: already exists; remove it to rebuild the code map")
    partial_folder(out)  # checked before any work
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, ckpt, sha = load_tokenizer(tokenizer_path, device)
    mcfg = ckpt["model_config"]
    dataset = build_dataset(cfg["data"], split)
    meta = {
        "code_shape": list(mcfg["code_shape"]), "codebook_size": mcfg["codebook_size"],
        "tokenizer": cfg["tokenizer"]["name"], "tokenizer_sha256": sha,
        "dataset": cfg["data"]["name"], "split": split, "num_rows": len(dataset),
        "data": describe(cfg["data"], split, dataset), "provenance": provenance(cfg),
    }
    ecfg = cfg["tokenizer"]["encode"]
    writer = CodeMapWriter(out, meta, ecfg["rows_per_shard"])
    done = writer.completed_rows()
    if done:
        print(f"resuming after {done} rows already in {writer.partial}", file=sys.stderr)
    rest = torch.utils.data.Subset(dataset, range(done, len(dataset)))
    loader = torch.utils.data.DataLoader(rest, batch_size=ecfg["batch_size"], collate_fn=collate,
                                         num_workers=cfg["tokenizer"]["train"]["num_workers"])
    progress = Progress(len(dataset), f"encode_codes {split}", start=done, unit="img")
    for batch in loader:
        x = to_model_range(batch["image"].to(device))
        codes = model.encode(x).cpu().numpy()
        writer.write(np.asarray(batch["index"]), codes, np.asarray(batch["label"]),
                     list(batch["caption"]))
        progress.update(len(x))
    writer.finish()
    print(f"wrote {out} ({len(dataset)} rows)", file=sys.stderr)
    return out


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--split", required=True)
    p.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        with hold(args.out.parent, args.out.name, output_is_folder=True):
            encode_split(cfg, args.tokenizer, args.split, args.out)


if __name__ == "__main__":
    main()
