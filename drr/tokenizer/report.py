"""Reconstruction report of a tokenizer on the held-out split: MSE/PSNR, codebook usage and
perplexity per depth, and a picture of originals above their reconstructions.

    python -m drr.tokenizer.report --config configs/experiments/tiny.yaml \
        --tokenizer results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt \
        --json results/tokenizers/tiny-fmnist-rq8x8x4/report.json \
        --markdown reports/tokenizers/tiny-fmnist-rq8x8x4.md --png reports/tokenizers/tiny-fmnist-rq8x8x4.png

MSE is on images scaled to [0, 1]; PSNR is the mean of per-image PSNRs. Usage at depth d is the
fraction of the K codes that occur at depth d over the whole split; perplexity is exp(entropy) of
the code frequencies at that depth (K at most).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from drr.cli import config_parser, resolve
from drr.errors import user_errors
from drr.progress import Progress
from drr.provenance import atomic_path, provenance, write_json, write_text


@torch.no_grad()
def evaluate(cfg: dict, tokenizer_path: Path, batch_size: int = 256, grid: int = 16) -> tuple[dict, torch.Tensor]:
    from drr.data import build_dataset, collate
    from drr.tokenizer.io import load_tokenizer
    from drr.tokenizer.train import to_model_range

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, ckpt, sha = load_tokenizer(tokenizer_path, device)
    K = ckpt["model_config"]["codebook_size"]
    D = ckpt["model_config"]["code_shape"][2]
    split = cfg["data"]["eval_split"]
    dataset = build_dataset(cfg["data"], split)
    loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, collate_fn=collate,
                                         num_workers=cfg["tokenizer"]["train"]["num_workers"])
    counts = torch.zeros(D, K, dtype=torch.long)
    sq_err, psnrs, n = 0.0, [], 0
    pictures = None
    progress = Progress(len(dataset), f"tokenizer_report {split}", unit="img")
    for batch in loader:
        x = to_model_range(batch["image"].to(device))
        codes = model.encode(x)
        recon = model.decode_codes(codes).clamp(-1, 1)
        err = ((recon - x) / 2).pow(2).flatten(1).mean(1)  # per-image MSE on [0, 1]
        sq_err += err.sum().item()
        psnrs.append((-10 * torch.log10(err.clamp_min(1e-10))).cpu())
        n += len(x)
        for d in range(D):
            counts[d] += torch.bincount(codes[..., d].flatten().cpu(), minlength=K)
        if pictures is None:
            k = min(grid, len(x))
            pictures = torch.cat([batch["image"][:k], ((recon[:k] + 1) * 127.5).round().byte().cpu()])
        progress.update(len(x))
    probs = counts.float() / counts.sum(1, keepdim=True)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    report = {
        "tokenizer": cfg["tokenizer"]["name"], "tokenizer_sha256": sha,
        "dataset": cfg["data"]["name"], "split": split, "num_images": n,
        "code_shape": ckpt["model_config"]["code_shape"], "codebook_size": K,
        "mse": sq_err / n, "psnr": float(torch.cat(psnrs).mean()),
        "usage_per_depth": [(counts[d] > 0).float().mean().item() for d in range(D)],
        "perplexity_per_depth": entropy.exp().tolist(),
        "rfid": None, "rfid_note": "rFID is computed by the metrics stage (not yet built)",
        "provenance": provenance(cfg),
    }
    return report, pictures


def markdown(report: dict, png_name: str | None) -> str:
    rows = "\n".join(
        f"| {d + 1} | {u:.3f} | {p:.1f} |"
        for d, (u, p) in enumerate(zip(report["usage_per_depth"], report["perplexity_per_depth"])))
    img = f"\n![originals (top) and reconstructions (bottom)]({png_name})\n" if png_name else ""
    return f"""# Tokenizer `{report['tokenizer']}`: reconstruction

{report['dataset']} `{report['split']}` split, {report['num_images']} images, codes {'x'.join(map(str, report['code_shape']))}, K = {report['codebook_size']}.

| MSE ([0,1] scale) | PSNR (dB) | rFID |
|---|---|---|
| {report['mse']:.5f} | {report['psnr']:.2f} | n/a ({report['rfid_note']}) |

| depth | codebook usage | perplexity |
|---|---|---|
{rows}
{img}
Checkpoint sha256 `{report['tokenizer_sha256'][:16]}…`, config `{report['provenance']['config_hash']}`, commit `{report['provenance']['git_commit'][:12]}`.
"""


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """uint8 (N, 3, R, R) -> PNG grid with nrow images per row."""
    from PIL import Image
    import torchvision

    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=2, pad_value=255)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--json", required=True, type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        report, pictures = evaluate(cfg, args.tokenizer)
        if args.png:
            save_grid(pictures, args.png, nrow=len(pictures) // 2)
        write_json(args.json, report)
        if args.markdown:
            write_text(args.markdown, markdown(report, args.png.name if args.png else None))
        print(f"PSNR {report['psnr']:.2f} dB, usage {np.round(report['usage_per_depth'], 3).tolist()}",
              file=sys.stderr)


if __name__ == "__main__":
    main()
