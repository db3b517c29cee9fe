"""Training report of a Contextual RQ-Transformer (or the AR baseline): the loss curve, the masked
NLL (eq. 11) on the held-out code maps next to the uniform baseline ln K, and the likelihood both
kinds share, the held-out NLL of whole code maps by the chain rule (drr/transformer/likelihood.py).

    python -m drr.transformer.report --config configs/experiments/tiny.yaml \
        --transformer results/transformers/tiny/checkpoint.pt \
        --codes results/codes/tiny-fmnist-rq8x8x4/fashion-mnist/test \
        --json results/transformers/tiny/report.json \
        --markdown reports/transformers/tiny.md --png reports/transformers/tiny.png

The curve is read from metrics.jsonl next to the checkpoint: the training loss, and the held-out
NLL the training measured every transformer.train.eval_every steps where that is set. Held-out NLL
uses masks drawn from eq. 10 with a fixed seed, so reports of two checkpoints are comparable; it is
in nats per code. For the contextual model it is not a likelihood (each code is scored given a
random fraction of the others) and not comparable with the AR model's. The chain-rule NLL is: on
the first transformer.report.chain_rule_maps held-out maps, in nats per map, the contextual model in
chain_rule_orders random orders one position a step (the factorisation Draft-and-Revise samples by
at T_draft = N; mean, and spread across orders), the AR model in raster order.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.files import atomic_path, write_json, write_text
from drr.core.provenance import provenance


def read_metrics(path: Path) -> list[dict]:
    if not path.exists():
        raise DrrError(f"{path}: training metrics log not found")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def evaluate(cfg: dict, transformer: Path, codes: Path, caption_bpe: Path | None,
             max_maps: int = 10000) -> dict:
    from drr.codes.store import open_code_map
    from drr.transformer.io import load_transformer
    from drr.transformer.likelihood import chain_rule_summary
    from drr.transformer.train import evaluate_nll, load_conditions

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    model, ckpt, sha = load_transformer(transformer, device)
    c = model.config
    code_map = open_code_map(codes, tokenizer_sha256=ckpt["tokenizer_sha256"],
                             code_shape=c.code_shape, codebook_size=c.codebook_size)
    n = min(len(code_map), max_maps)
    maps = torch.from_numpy(code_map.codes[:n].reshape(n, -1, c.depth).astype("int64")).to(device)
    cond = torch.from_numpy(load_conditions(cfg, code_map, caption_bpe)[:n]).to(device)
    nll = evaluate_nll(model, maps, cond, seed=cfg["seed"])
    null_nll = evaluate_nll(model, maps, model.null_condition(cond), seed=cfg["seed"])
    rcfg = cfg["transformer"]["report"]
    chain = min(n, rcfg["chain_rule_maps"])
    chain_rule = chain_rule_summary(model, maps[:chain], cond[:chain], rcfg["chain_rule_orders"],
                                    seed=cfg["seed"]) if chain else None
    metrics = read_metrics(transformer.parent / "metrics.jsonl")
    train = [m for m in metrics if "loss" in m]  # the held-out lines (transformer.train.eval_every) hold heldout_nll
    return {
        "experiment": transformer.parent.name, "transformer_sha256": sha,
        "parameters": sum(p.numel() for p in model.parameters()),
        "trained_steps": ckpt["provenance"].get("trained_steps"),
        "eval_code_maps": n, "eval_split": cfg["data"]["eval_split"],
        "heldout_maps": min(n, cfg["transformer"]["train"]["eval_maps"]),
        "eval_nll": nll, "eval_nll_null_condition": null_nll, "uniform_nll": math.log(c.codebook_size),
        "chain_rule_nll": chain_rule,
        "final_train_loss": train[-1]["loss"] if train else None,
        "tokens_per_s": train[-1].get("tokens_per_s") if train else None,
        "curve": [(m["step"], m["loss"], m["lr"]) for m in train],
        "heldout_curve": [(m["step"], m["heldout_nll"]) for m in metrics if "heldout_nll" in m],
        "provenance": provenance(cfg),
    }


def plot(report: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps, loss, lr = zip(*report["curve"]) if report["curve"] else ((), (), ())
    fig, ax = plt.subplots(figsize=(6, 3.5))
    ax.plot(steps, loss, label="train masked NLL (eq. 11)")
    if report.get("heldout_curve"):
        ax.plot(*zip(*report["heldout_curve"]), "o-", color="C1", ms=3,
                label=f"held-out during training (first {report['heldout_maps']} maps)")
    ax.axhline(report["eval_nll"], color="C1", ls="--", label=f"held-out {report['eval_nll']:.3f}")
    ax.axhline(report["uniform_nll"], color="gray", ls=":", label=f"uniform ln K {report['uniform_nll']:.2f}")
    ax.set_xlabel("step")
    ax.set_ylabel("nats per code")
    ax.set_title(f"{report['experiment']}: {report['parameters'] / 1e6:.2f}M parameters")
    ax.legend(fontsize=8)
    ax2 = ax.twinx()
    ax2.plot(steps, lr, color="C2", alpha=0.4)
    ax2.set_ylabel("learning rate", color="C2")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)


def heldout_curve_text(report: dict) -> str:
    curve = report.get("heldout_curve") or []
    if not curve:
        return ""
    rows = "".join(f"| {s} | {v:.4f} |\n" for s, v in curve)
    return (f"\nHeld-out NLL during training (first {report['heldout_maps']} maps of `{report['eval_split']}`, "
            f"every transformer.train.eval_every steps):\n\n| step | nats per code |\n|---|---|\n{rows}")


def chain_rule_text(report: dict) -> str:
    """The chain-rule NLL paragraph: nats per map, the likelihood both kinds share."""
    s = report.get("chain_rule_nll")
    if not s:
        return ("\nChain-rule NLL of whole code maps: not computed "
                "(transformer.report.chain_rule_maps is 0).\n")
    se = f" ± {s['se_over_maps']:.1f} (standard error over maps)" if s["se_over_maps"] is not None else ""
    if s["order"] == "raster":
        how = "in raster order, the factorisation the AR model samples by"
    else:
        per_order = ", ".join(f"{v:.1f}" for v in s["per_order"])
        how = (f"in random orders, one position a step (the factorisation Draft-and-Revise samples by "
               f"at T_draft = N): mean of {s['orders']} orders per map (per order {per_order}; "
               f"spread across orders {s['order_spread']:.1f} nats per map, root mean square over maps)")
    return (f"\nChain-rule NLL of whole code maps, the likelihood both model kinds share (first "
            f"{s['maps']} maps of `{report['eval_split']}`): **{s['nats_per_map']:.1f} nats per map**"
            f"{se}, {how}. A uniform model (N·D·ln K): {s['uniform']:.1f}.\n")


def markdown(report: dict, png_name: str | None) -> str:
    img = f"\n![training curve]({png_name})\n" if png_name else ""
    tps = f"{report['tokens_per_s']:.0f}" if report["tokens_per_s"] else "n/a"
    return f"""# Transformer `{report['experiment']}`: training

{report['parameters'] / 1e6:.2f}M parameters, {report['trained_steps']} steps, last logged throughput {tps} code tokens/s.

| masked NLL, nats per code | value |
|---|---|
| train (last logged step) | {report['final_train_loss']:.4f} |
| held-out, `{report['eval_split']}` ({report['eval_code_maps']} code maps) | {report['eval_nll']:.4f} |
| held-out, null condition | {report['eval_nll_null_condition']:.4f} |
| uniform over K codes | {report['uniform_nll']:.4f} |
{chain_rule_text(report)}{heldout_curve_text(report)}{img}
Checkpoint sha256 `{report['transformer_sha256'][:16]}…`, config `{report['provenance']['config_hash']}`, commit `{report['provenance']['git_commit'][:12]}`.
"""


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--transformer", required=True, type=Path)
    p.add_argument("--codes", required=True, type=Path, help="code map of the eval split")
    p.add_argument("--text-tokenizer", dest="caption_bpe", type=Path,
                   help="the caption BPE's JSON (drr.text.bpe; text-conditional models)")
    p.add_argument("--json", required=True, type=Path)
    p.add_argument("--markdown", type=Path)
    p.add_argument("--png", type=Path)
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        report = evaluate(cfg, args.transformer, args.codes, args.caption_bpe)
        if args.png:
            plot(report, args.png)
        write_json(args.json, report)
        if args.markdown:
            write_text(args.markdown, markdown(report, args.png.name if args.png else None))


if __name__ == "__main__":
    main()
