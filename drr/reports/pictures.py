"""Sample pictures made from the models directly: paper Figure 5 and the grids of Appendix D.

    python -m drr.reports.pictures progression --config configs/experiments/tiny.yaml \
        --tokenizer T.pt --transformer M.pt --t-draft 8 64 --revise-iterations 5 --samples 6 \
        --out reports/fig5.png
    python -m drr.reports.pictures conditions --config configs/experiments/tiny.yaml \
        --tokenizer T.pt --transformer M.pt --classes 7 9 200 --per-class 8 --out classes.png
    python -m drr.reports.pictures conditions ... --text-tokenizer bpe.json --captions CODES \
        --num-captions 6 --per-caption 6 --out captions.png
    python -m drr.reports.pictures compare --images A.png B.png --labels "contextual" "AR" --out C.png

progression (Figure 5): for each T_draft, `samples` rows; columns are the draft and the images
after revise passes M = 1..5 of one Draft-and-Revise run (the experiment's other sampling
settings), so a row shows one sample being revised.

conditions (App. D, Figures 3-4): rows are classes (those below num_classes) or eval-split captions,
columns samples at the experiment's sampling settings. Sample k of condition c has the global index
c + k * (number of conditions of the generation run), hence the same seed, condition and image as
that index of the experiment's samples.npz.

compare (paper Figure 1): inpainting figures of two models side by side. drr.sampling.inpaint draws
the same rows, masks and seeds for every model of one tokenizer, so the masked inputs are identical;
the records (.json beside each PNG) are checked for that.

PNG and PDF (same name) are written atomically, with a .json record of what was drawn.
"""

from __future__ import annotations

import argparse
import textwrap
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import torch

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.files import write_json
from drr.core.provenance import provenance
from drr.reports.plotting import pyplot, save_png_pdf


def labelled_grid(blocks, out: Path, title: str) -> None:
    """blocks: [(block title, row labels, column labels, uint8 (rows, cols, R, R, 3))] -> PNG + PDF."""
    plt = pyplot()
    cols = max(b[3].shape[1] for b in blocks)
    rows = sum(b[3].shape[0] for b in blocks)
    # Fixed margins in inches rather than tight_layout, which would give every row the room of a
    # block's title row: 1 in images, 0.25 in between (room for a title line), row labels on the left.
    labels = [textwrap.wrap(str(label), 18)[:3] for b in blocks for label in b[1]]
    left = 0.25 + 0.1 * max((len(lines) for lines in labels), default=0)  # vertical 6 pt lines
    top, cell, gap = 0.75, 1.0, 0.25
    width, height = left + cols * cell + (cols - 1) * 0.06 + 0.1, top + rows * (cell + gap)
    fig, axes = plt.subplots(rows, cols, figsize=(width, height), squeeze=False)
    fig.subplots_adjust(left=left / width, right=1 - 0.1 / width, top=1 - top / height,
                        bottom=gap / height, wspace=0.06, hspace=gap / cell)
    r0 = 0
    for block_title, row_labels, col_labels, images in blocks:
        for i in range(images.shape[0]):
            for j in range(cols):
                ax = axes[r0 + i][j]
                ax.set_xticks([])
                ax.set_yticks([])
                if j < images.shape[1]:
                    ax.imshow(images[i, j], interpolation="nearest")
                else:
                    ax.axis("off")
                if i == 0 and j < len(col_labels):
                    ax.set_title(col_labels[j] if j else f"{block_title}: {col_labels[j]}"
                                 if block_title else col_labels[j], fontsize=7, loc="left" if not j else "center")
                if j == 0:
                    ax.set_ylabel("\n".join(labels[r0 + i]), fontsize=6)
        r0 += images.shape[0]
    fig.suptitle(title, fontsize=8, y=1 - 0.25 / height)
    save_png_pdf(fig, out, None, dpi=110, tight=False)


def _models(cfg, tokenizer, transformer, device):
    from drr.core.device import job_device
    from drr.sampling.models import load_models
    dev = job_device(cfg, device)
    return dev, load_models(tokenizer, transformer, dev, cfg)


def progression(cfg: dict, tokenizer: Path, transformer: Path, out: Path, t_drafts: list[int],
                revise_iterations: int, samples: int, device: str | None = None) -> dict:
    from drr.sampling.conditions import Conditions
    from drr.sampling.decode import DecodeSettings, draft_and_revise, sample_seeds
    from drr.sampling.images import decode_images
    from drr.sampling.sampler import precision

    if samples < 1 or revise_iterations < 1:
        raise DrrError(f"--samples {samples} / --revise-iterations {revise_iterations}: need at least 1")
    dev, models = _models(cfg, tokenizer, transformer, device)
    if models.transformer.config.kind != "contextual":
        raise DrrError(f"{transformer}: Figure 5 needs a Contextual RQ-Transformer, this one is "
                       f"{models.transformer.config.kind!r}")
    conds = Conditions(cfg)
    idx = np.arange(samples)
    cond = conds(idx).to(dev)
    seeds = sample_seeds(cfg["seed"], idx)
    blocks, record = [], []
    for t in t_drafts:
        settings = replace(DecodeSettings.from_config(cfg["sampling"]), t_draft=int(t),
                           revise_iterations=int(revise_iterations))
        passes = {}
        with precision(cfg, dev):
            draft_and_revise(models.transformer, cond, settings, seeds,
                             on_pass=lambda m, codes: passes.__setitem__(m, codes.clone()))
        pics = np.stack([decode_images(models.tokenizer, passes[m], models.code_shape)
                         for m in range(revise_iterations + 1)], axis=1)
        labels = conds.labels(idx)
        blocks.append((f"T_draft = {t}", [f"class {c}" for c in labels] if labels is not None
                       else [""] * samples, ["draft"] + [f"M = {m}" for m in range(1, revise_iterations + 1)],
                       pics))
        record.append({"t_draft": int(t), "decode_settings": asdict(settings)})
    labelled_grid(blocks, out, f"Figure 5: draft -> revised, {cfg['data']['name']}")
    info = {"png": str(out), "blocks": record, "samples": samples, "transformer_sha256":
            models.transformer_sha256, "provenance": provenance(cfg)}
    write_json(out.with_suffix(".json"), info)
    return info


def conditions_grid(cfg: dict, tokenizer: Path, transformer: Path, out: Path, *, classes=None,
                    per_condition: int = 8, num_captions: int = 6, caption_bpe=None, captions=None,
                    device: str | None = None) -> dict:
    from drr.sampling.conditions import Conditions
    from drr.sampling.decode import sample_seeds
    from drr.sampling.images import decode_images
    from drr.sampling.sampler import precision, sample_codes, sampling_settings

    dev, models = _models(cfg, tokenizer, transformer, device)
    conds = Conditions(cfg, caption_bpe, captions)
    if conds.type == "class":
        chosen = [int(c) for c in (classes or []) if 0 <= int(c) < conds.num_classes]
        if not chosen:
            raise DrrError(f"--classes {classes}: none is below transformer.model.cond.num_classes "
                           f"{conds.num_classes}")
        period, labels = conds.num_classes, [f"class {c}" for c in chosen]
    elif conds.type == "text":
        chosen = list(range(min(num_captions, len(conds.captions))))
        period, labels = len(conds.captions), [conds.captions[c] for c in chosen]
    else:
        raise DrrError("transformer.model.cond.type is 'none': no conditions to show")
    idx = np.array([c + k * period for c in chosen for k in range(per_condition)], dtype=np.int64)
    settings = sampling_settings(cfg)
    with precision(cfg, dev):
        codes, _ = sample_codes(models.transformer, conds(idx).to(dev), settings,
                                sample_seeds(cfg["seed"], idx))
    pics = decode_images(models.tokenizer, codes, models.code_shape)
    pics = pics.reshape(len(chosen), per_condition, *pics.shape[1:])
    labelled_grid([("", labels, [f"#{k + 1}" for k in range(per_condition)], pics)], out,
                  f"Samples per condition: {cfg['data']['name']} (experiment sampling settings)")
    info = {"png": str(out), "conditions": labels, "indices": idx.tolist(),
            "transformer_sha256": models.transformer_sha256, "provenance": provenance(cfg)}
    write_json(out.with_suffix(".json"), info)
    return info


def compare(images: list[Path], labels: list[str], out: Path, title: str) -> None:
    """Pictures side by side; inpainting records beside them must show the same rows and masks."""
    import json

    from PIL import Image

    plt = pyplot()
    if len(images) != len(labels) or len(images) < 2:
        raise DrrError(f"--images {len(images)} and --labels {len(labels)}: need two or more of each, "
                       "as many labels as images")
    records = []
    for path in images:
        rec = Path(path).with_suffix(".json")
        if rec.is_file():
            r = json.loads(rec.read_text())
            records.append((rec, {k: r.get(k) for k in ("rows", "masks", "samples", "lines")}))
    for rec, what in records[1:]:
        if what != records[0][1]:
            diff = next(k for k in what if what[k] != records[0][1][k])
            raise DrrError(f"{rec}: field '{diff}' differs from {records[0][0]}; the pictures do not "
                           "show the same masked images")
    pics = [np.asarray(Image.open(p).convert("RGB")) for p in images]
    fig, axes = plt.subplots(1, len(pics), figsize=(5 * len(pics), 5 * pics[0].shape[0] / pics[0].shape[1] + 0.6))
    for ax, pic, label in zip(axes, pics, labels):
        ax.imshow(pic)
        ax.set_title(label, fontsize=9)
        ax.axis("off")
    save_png_pdf(fig, out, title)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    for name in ("progression", "conditions"):
        s = sub.add_parser(name, parents=[config_parser(name)], add_help=False)
        s.add_argument("--tokenizer", required=True, type=Path)
        s.add_argument("--transformer", required=True, type=Path)
        s.add_argument("--out", required=True, type=Path, help="PNG (the PDF and .json go beside it)")
        s.add_argument("--device", help="auto | cuda | cuda:N | cpu (default: the config's `device`)")
    prog = sub.choices["progression"]
    prog.add_argument("--t-draft", type=int, nargs="+", default=[8, 64])
    prog.add_argument("--revise-iterations", type=int, default=5)
    prog.add_argument("--samples", type=int, default=6)
    cond = sub.choices["conditions"]
    cond.add_argument("--classes", type=int, nargs="+")
    cond.add_argument("--per-class", "--per-caption", dest="per_condition", type=int, default=8)
    cond.add_argument("--num-captions", type=int, default=6)
    cond.add_argument("--text-tokenizer", dest="caption_bpe", type=Path,
                      help="the caption BPE's JSON (drr.text.bpe; text-conditional models)")
    cond.add_argument("--captions", type=Path, help="eval split's code map (text models)")
    cmp = sub.add_parser("compare")
    cmp.add_argument("--images", type=Path, nargs="+", required=True)
    cmp.add_argument("--labels", nargs="+", required=True)
    cmp.add_argument("--title", default="Inpainting: the same masked images, one model per panel "
                     "(each line: original, masked, completions)")
    cmp.add_argument("--out", required=True, type=Path)
    args = p.parse_args(argv)
    if args.out.suffix != ".png":
        raise SystemExit(f"error: --out {args.out}: expected a .png path")
    if args.command == "compare":
        with user_errors():
            compare(args.images, args.labels, args.out, args.title)
            print(f"wrote {args.out}")
        return
    with user_errors():
        cfg = resolve(args)
        torch.set_grad_enabled(False)
        if args.command == "progression":
            progression(cfg, args.tokenizer, args.transformer, args.out, args.t_draft,
                        args.revise_iterations, args.samples, args.device)
        else:
            conditions_grid(cfg, args.tokenizer, args.transformer, args.out, classes=args.classes,
                            per_condition=args.per_condition, num_captions=args.num_captions,
                            caption_bpe=args.caption_bpe, captions=args.captions,
                            device=args.device)
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
