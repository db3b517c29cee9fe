"""Reconstruction report of a tokenizer on the held-out split: MSE/PSNR, codebook usage and
perplexity per depth, and a picture of originals above their reconstructions.

    python -m drr.tokenizer.report --config configs/experiments/tiny.yaml \
        --tokenizer results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt \
        --json results/tokenizers/tiny-fmnist-rq8x8x4/report.json \
        --markdown reports/tokenizers/tiny-fmnist-rq8x8x4.md --png reports/tokenizers/tiny-fmnist-rq8x8x4.png \
        --reference results/reference/<reference>.npz

MSE is on images scaled to [0, 1]; PSNR is the mean of per-image PSNRs. Usage at depth d is the
fraction of the K codes that occur at depth d over the whole split; perplexity is exp(entropy) of
the code frequencies at that depth (K at most).

rFID (with ``--reference``, the experiment's reference statistics of the metrics stage, and
``tokenizer.report.rfid_images`` = N > 0): the FID of the reconstructions of N evenly spaced
held-out images against that reference, beside the FID of the same N real images (the floor: what
FID gives real images at this N against this reference), and their paired difference, each with
the metrics stage's 95% basic bootstrap interval (drr.metrics.intervals; the same resampled
indices for both sets, so the difference's interval is paired). FID falls with N, so compare rFID
with its floor, not with published 50k-image rFIDs.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

from drr.core.cli import config_parser, resolve
from drr.core.errors import user_errors
from drr.core.files import atomic_path, write_json, write_text
from drr.core.progress import Progress
from drr.core.provenance import provenance


def rfid_reason(cfg: dict, reference) -> str | None:
    """Why rFID is not computed, or None."""
    if cfg["tokenizer"]["report"]["rfid_images"] == 0:
        return "tokenizer.report.rfid_images is 0"
    if reference is None:
        return "no --reference statistics given"
    return None


def rfid(cfg: dict, pools: dict, reference: Path, resolution: int) -> dict:
    """rFID, the real images' FID (floor) and rFID − floor, with 95% basic bootstrap intervals."""
    from drr.metrics import intervals, maths
    from drr.metrics.reference import read_reference
    from drr.metrics.score import check_reference

    ref = read_reference(reference)
    note = check_reference(ref, pools["extractor"], cfg, resolution)
    n = len(pools["recon"])
    idx, _ = intervals.bootstrap_indices(n, intervals.replicates_for(n))
    w = intervals.counts(idx, n)
    out, reps = {"rfid_images": n, "rfid_reference": str(reference), "rfid_reference_note": note}, {}
    for name, feats in (("rfid", pools["recon"]), ("real_fid", pools["real"])):
        mu, sigma = maths.stats(feats)
        out[name] = maths.fid_from_stats(mu, sigma, ref.mu, ref.sigma)
        reps[name] = intervals.fid_replicates(feats, ref.mu, ref.sigma, w)
        out[f"{name}_lo"], out[f"{name}_hi"] = intervals.basic_interval(out[name], reps[name])
    out["rfid_minus_real"] = out["rfid"] - out["real_fid"]
    out["rfid_minus_real_lo"], out["rfid_minus_real_hi"] = intervals.basic_interval(
        out["rfid_minus_real"], reps["rfid"] - reps["real_fid"])
    out["rfid_interval_method"] = "basic bootstrap over the N images, paired, reference fixed"
    return out


@torch.no_grad()
def evaluate(cfg: dict, tokenizer_path: Path, batch_size: int = 256, grid: int = 16,
             reference: Path | None = None) -> tuple[dict, torch.Tensor]:
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
    no_rfid = rfid_reason(cfg, reference)
    pools = {"recon": [], "real": []}
    if no_rfid is None:
        from drr.metrics.inception import load_inception
        from drr.metrics.reference import pr_indices

        pools["extractor"] = load_inception(cfg["metrics"], device)
        chosen = np.zeros(len(dataset), bool)
        chosen[pr_indices(len(dataset), min(cfg["tokenizer"]["report"]["rfid_images"], len(dataset)))] = True
    progress = Progress(len(dataset), f"tokenizer_report {split}" + ("" if no_rfid else " (+ rFID)"),
                        unit="img")
    for batch in loader:
        x = to_model_range(batch["image"].to(device))
        codes = model.encode(x)
        recon = model.decode_codes(codes).clamp(-1, 1)
        if no_rfid is None:
            keep = torch.from_numpy(chosen[n:n + len(x)])
            if keep.any():
                recon_u8 = ((recon[keep.to(device)] + 1) * 127.5).round().byte()
                pools["recon"].append(pools["extractor"](recon_u8)["pool"])
                pools["real"].append(pools["extractor"](batch["image"][keep])["pool"])
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
    if no_rfid is None:
        feats = {k: np.concatenate(pools[k]) for k in ("recon", "real")}
        recon_fid = rfid(cfg, {**feats, "extractor": pools["extractor"]}, reference,
                         int(cfg["data"]["resolution"]))
    else:
        recon_fid = {"rfid": None, "rfid_note": no_rfid}
    probs = counts.float() / counts.sum(1, keepdim=True)
    entropy = -(probs * probs.clamp_min(1e-12).log()).sum(1)
    report = {
        "tokenizer": cfg["tokenizer"]["name"], "tokenizer_sha256": sha,
        "dataset": cfg["data"]["name"], "split": split, "num_images": n,
        "code_shape": ckpt["model_config"]["code_shape"], "codebook_size": K,
        "mse": sq_err / n, "psnr": float(torch.cat(psnrs).mean()),
        "usage_per_depth": [(counts[d] > 0).float().mean().item() for d in range(D)],
        "perplexity_per_depth": entropy.exp().tolist(),
        **recon_fid,
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
| {report['mse']:.5f} | {report['psnr']:.2f} | {_rfid_cell(report)} |
{_rfid_note(report)}
| depth | codebook usage | perplexity |
|---|---|---|
{rows}
{img}
Checkpoint sha256 `{report['tokenizer_sha256'][:16]}…`, config `{report['provenance']['config_hash']}`, commit `{report['provenance']['git_commit'][:12]}`.
"""


def _interval(report: dict, key: str) -> str:
    return f"{report[key]:.2f} [{report[key + '_lo']:.2f}, {report[key + '_hi']:.2f}]"


def _rfid_cell(report: dict) -> str:
    return f"n/a ({report['rfid_note']})" if report.get("rfid") is None else _interval(report, "rfid")


def _rfid_note(report: dict) -> str:
    if report.get("rfid") is None:
        return ""
    ref = Path(report["rfid_reference"]).name
    extra = f" ({report['rfid_reference_note']})" if report.get("rfid_reference_note") else ""
    return (f"\nrFID: reconstructions of {report['rfid_images']} evenly spaced `{report['split']}` images "
            f"against the reference statistics `{ref}`{extra}. The same real images score "
            f"{_interval(report, 'real_fid')} (the floor at this N); rFID − floor "
            f"{_interval(report, 'rfid_minus_real')}. 95% basic bootstrap intervals, paired, reference "
            "fixed (drr.metrics.intervals).\n")


def save_grid(images: torch.Tensor, path: Path, nrow: int) -> None:
    """uint8 (N, 3, R, R) -> PNG grid with nrow images per row."""
    import torchvision
    from PIL import Image

    grid = torchvision.utils.make_grid(images, nrow=nrow, padding=2, pad_value=255)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path)
    p.add_argument("--json", required=True, type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--png", type=Path)
    p.add_argument("--reference", type=Path,
                   help="reference statistics (results/reference/*.npz) for rFID; without it no rFID")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        report, pictures = evaluate(cfg, args.tokenizer, reference=args.reference)
        if args.png:
            save_grid(pictures, args.png, nrow=len(pictures) // 2)
        write_json(args.json, report)
        if args.markdown:
            write_text(args.markdown, markdown(report, args.png.name if args.png else None))
        rf = "n/a" if report.get("rfid") is None else f"{report['rfid']:.2f} (real {report['real_fid']:.2f})"
        print(f"PSNR {report['psnr']:.2f} dB, rFID {rf}, usage "
              f"{np.round(report['usage_per_depth'], 3).tolist()}", file=sys.stderr)


if __name__ == "__main__":
    main()
