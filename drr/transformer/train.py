"""Train a Contextual RQ-Transformer (paper §3.2.3, App. A.3), or the autoregressive RQ-Transformer
baseline (`transformer.model.kind: ar`, drr/transformer/ar.py), on a code map.

    python -m drr.transformer.train --config configs/experiments/tiny.yaml \
        --tokenizer results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt \
        --codes results/codes/tiny-fmnist-rq8x8x4/fashion-mnist/train \
        --out results/transformers/tiny/checkpoint.pt

`transformer.launch.executor` decides where it runs: `inprocess` (this process; torchrun for
several GPUs), `local` (submitit's local executor, one process per "GPU", gloo on CPU) or `slurm`
(submitit submits a job with the partition, nodes, GPUs, time, account, qos and constraint of
`transformer.launch`, and this command waits for it). Either way, resume is "run the same command
again": the loop saves its state (model, optimizer, step, RNG) every `checkpoint_minutes` of wall
time and/or every `checkpoint_every` steps, when the job is told it will stop (SLURM's time-limit
warning, preemption) and at the end, and a new run, or a requeued SLURM job, starts from
`drr.core.checkpoint.latest_state(run_dir)`.

Each step: a global batch of code maps (a pure function of seed and step, `drr.core.training`), masks
from eq. 10 and condition dropout drawn for the whole global batch from a generator seeded by
(seed, step), so W processes each taking every W-th row compute exactly the one-process step; the
loss is eq. 11, the NLL summed over the masked code stacks and divided by the global count. For
kind 'ar' every position is scored (no masks are drawn): the loss is the next-code NLL over all
positions and depths, the same sum over the global count.

Writes next to --out: config.yaml, metrics.jsonl (loss, lr, tokens/s, ...), train-state.pt, and
with `snapshot_every` snapshots/step-NNNNNN.pt (the weights after that many steps, in --out's
format); --out (the model, kind 'drr-transformer') only when training ends.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from drr.core import distributed
from drr.core.cli import config_parser, refuse_imported, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.launch import TrainingJob
from drr.core.progress import Progress
from drr.core.training import (
    MetricsLog,
    StopSignal,
    batch_indices,
    check_finite,
    resume,
    save_run_config,
    start_run,
    state_checkpoints,
    warmup_cosine,
)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The random stream of one step's masks and condition dropout (same on every process)."""
    return torch.Generator().manual_seed(int(np.random.SeedSequence([seed, 1, step]).generate_state(1)[0]))


def score_positions(kind: str, batch: int, n: int, generator: torch.Generator) -> torch.Tensor:
    """(B, N) bool positions whose codes a step scores: eq.-10 masks for the contextual model,
    every position for the AR model (its input is never masked)."""
    from drr.transformer.model import sample_masks
    if kind == "ar":
        return torch.ones(batch, n, dtype=torch.bool)
    return sample_masks(batch, n, generator)


def load_conditions(cfg: dict, code_map, caption_bpe: Path | None) -> np.ndarray:
    """(N_rows, L_cond) int64 conditions of every row: labels, caption token ids, or zeros."""
    cond = cfg["transformer"]["model"]["cond"]
    if cond["type"] == "class":
        labels = code_map.labels.astype(np.int64)
        if labels.min() < 0 or labels.max() >= cond["num_classes"]:
            raise DrrError(f"{code_map.folder}: field 'label' spans [{labels.min()}, {labels.max()}], "
                           f"transformer.model.cond.num_classes is {cond['num_classes']}")
        return labels[:, None]
    if cond["type"] == "text":
        from drr.text import CaptionBPE
        if caption_bpe is None:
            raise DrrError("transformer.model.cond.type is 'text': pass --text-tokenizer")
        bpe = CaptionBPE.load(caption_bpe)
        bpe.check_vocab(cond["vocab_size"], str(caption_bpe))
        return bpe.encode(code_map.captions, cond["length"])
    return np.zeros((len(code_map), 1), dtype=np.int64)


def train(cfg: dict, tokenizer: Path, codes: Path, out: Path,
          caption_bpe: Path | None = None) -> Path:
    from drr.codes.store import open_code_map
    from drr.tokenizer.io import load_tokenizer, shared_code_embeddings
    from drr.transformer.build import build_transformer
    from drr.transformer.io import save_transformer
    from drr.transformer.model import TransformerConfig, masked_nll, text_nll, text_targets

    rank, world, device, run_dir = start_run(cfg, "transformer", out)
    main = rank == 0
    tcfg = cfg["transformer"]["train"]
    mcfg = TransformerConfig.from_experiment(cfg)
    tok_model, _, tok_sha = load_tokenizer(tokenizer)
    code_embeddings = shared_code_embeddings(tok_model, tokenizer)
    code_map = open_code_map(codes, tokenizer_sha256=tok_sha, code_shape=mcfg.code_shape,
                             codebook_size=mcfg.codebook_size)
    all_codes = code_map.codes.reshape(len(code_map), -1, mcfg.depth)  # numpy, read-only
    all_cond = torch.from_numpy(load_conditions(cfg, code_map, caption_bpe))
    model = build_transformer(mcfg, code_embeddings).to(device)
    del tok_model
    n_params = sum(p.numel() for p in model.parameters())
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2 and "pos_emb" not in n]
    no_decay = [p for n, p in model.named_parameters() if not (p.ndim >= 2 and "pos_emb" not in n)]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": tcfg["weight_decay"]},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=tcfg["lr"], betas=tuple(tcfg["betas"]))

    step, state_file = resume(run_dir, {"model": model, "opt": opt}, rank, main)
    if state_file is None and main:
        print(f"training {n_params / 1e6:.2f}M parameters on {len(code_map)} code maps "
              f"({codes}), {world} process(es), device {device}", file=sys.stderr, flush=True)

    save_run_config(cfg, run_dir, main)  # inputs and state read: nothing invalid is recorded
    net = torch.compile(model) if tcfg["compile"] else model
    ddp = torch.nn.parallel.DistributedDataParallel(net) if world > 1 else net
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=main)
    log.truncate_after(step)
    progress = Progress(tcfg["steps"], "train_transformer", start=step, enabled=main)
    stop = StopSignal()

    saves = state_checkpoints(
        stop, tcfg, device, run_dir, world, main,
        lambda: {"step": step, "model": model.state_dict(), "opt": opt.state_dict(), "config": cfg},
        saved_step=step if state_file is not None else None)

    heldout = heldout_set(cfg, codes, tok_sha, mcfg, caption_bpe, device) if tcfg["eval_every"] and main else None
    model.train()
    b, n = tcfg["batch_size"], mcfg.num_positions
    tokens_per_step = b * n * mcfg.depth
    t_log, steps_log = time.monotonic(), 0
    while step < tcfg["steps"]:
        idx = batch_indices(len(code_map), b, step, cfg["seed"])  # the global batch
        gen = step_generator(cfg["seed"], step)
        mask = score_positions(mcfg.kind, b, n, gen)
        cond, dropped = model.drop_condition(all_cond[idx], tcfg["cond_dropout"], gen)
        n_masked = int(mask.sum())
        share = slice(rank, None, world)
        codes_r = torch.from_numpy(all_codes[idx[share]].astype(np.int64)).to(device, non_blocking=True)
        mask_r, cond_r = mask[share].to(device), cond[share].to(device)
        lr = warmup_cosine(step, tcfg["lr"], tcfg["steps"], tcfg["warmup_steps"], tcfg["final_lr"])
        for group in opt.param_groups:
            group["lr"] = lr
        with distributed.autocast(device, tcfg["precision"]):
            out_r = ddp(codes_r, mask_r, cond_r)
        # Eq. 11 summed over this process's masked stacks, over the global count: after DDP's
        # gradient average (x world) every process holds the one-process gradient.
        code_loss = masked_nll(out_r) * (out_r["targets"].numel() / (n_masked * mcfg.depth)) * world
        loss = code_loss
        if out_r["cond_logits"] is not None and tcfg["text_loss_weight"] > 0:
            n_text = max(1, int((text_targets(cond, dropped) != -100).sum()))
            text_sum = text_nll(out_r, cond_r, dropped[share].to(device), reduction="sum")
            loss = loss + tcfg["text_loss_weight"] * text_sum / n_text * world
        check_finite(loss, step, rank, world, device, run_dir)  # a collective, before DDP's one
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
        opt.step()
        step += 1
        steps_log += 1
        nll = distributed.all_reduce_mean(code_loss.detach()).item()
        progress.update(nll=nll, lr=lr)
        if step % tcfg["log_every"] == 0 or step == tcfg["steps"]:
            now = time.monotonic()
            log.write(step=step, lr=lr, loss=nll, masked_fraction=n_masked / (b * n),
                      tokens_per_s=steps_log * tokens_per_step / max(now - t_log, 1e-9))
            t_log, steps_log = now, 0
        if heldout is not None and (step % tcfg["eval_every"] == 0 or step == tcfg["steps"]):
            with distributed.autocast(device, tcfg["precision"]):
                log.write(step=step, heldout_nll=evaluate_nll(model, *heldout, seed=cfg["seed"]))
            model.train()
        if main and tcfg["snapshot_every"] and step % tcfg["snapshot_every"] == 0 and step < tcfg["steps"]:
            save_transformer(model, cfg, snapshot_path(run_dir, step), tok_sha, trained_steps=step,
                             parameters=n_params, codes=str(codes))
        saves.after_step(step)
    stop.restore()

    saves.finish(step)  # a collective: every process takes part
    if main:
        save_transformer(model, cfg, out, tok_sha, trained_steps=step, parameters=n_params,
                         codes=str(codes))
        print(f"wrote {out}", file=sys.stderr)
    distributed.barrier()
    return out


def snapshot_path(run_dir: Path, step: int) -> Path:
    """Where the copy of the weights after `step` steps goes (transformer.train.snapshot_every)."""
    return Path(run_dir) / "snapshots" / f"step-{step:06d}.pt"


def heldout_set(cfg: dict, codes: Path, tok_sha: str, mcfg, caption_bpe: Path | None, device):
    """(code maps, conditions) of the first transformer.train.eval_maps held-out maps: the eval
    split's code maps beside the training ones (results/codes/<tokenizer>/<dataset>/<split>)."""
    from drr.codes.store import open_code_map

    folder = Path(codes).parent / cfg["data"]["eval_split"]
    if not folder.is_dir():
        raise DrrError(f"{folder}: no held-out code maps (transformer.train.eval_every is set; the "
                       f"workflow encodes the eval split {cfg['data']['eval_split']!r} before training)")
    held = open_code_map(folder, tokenizer_sha256=tok_sha, code_shape=mcfg.code_shape,
                         codebook_size=mcfg.codebook_size)
    n = min(len(held), cfg["transformer"]["train"]["eval_maps"])
    maps = torch.from_numpy(held.codes[:n].reshape(n, -1, mcfg.depth).astype(np.int64)).to(device)
    return maps, torch.from_numpy(load_conditions(cfg, held, caption_bpe)[:n]).to(device)


def evaluate_nll(model, codes: torch.Tensor, cond: torch.Tensor, seed: int = 0,
                 batch_size: int = 256) -> float:
    """Mean NLL on held-out code maps, nats per code: of the masked codes under eq.-10 masks (eq. 11)
    for the contextual model, of every code given the earlier ones for the AR model."""
    gen = torch.Generator().manual_seed(seed)
    total, count = 0.0, 0
    model.eval()
    with torch.no_grad():
        for i in range(0, len(codes), batch_size):
            c = codes[i:i + batch_size]
            mask = score_positions(model.config.kind, len(c), c.shape[1], gen).to(c.device)
            out = model(c, mask, cond[i:i + batch_size])
            total += F.cross_entropy(out["logits"].float().flatten(0, 1), out["targets"].flatten(),
                                     reduction="sum").item()
            count += out["targets"].numel()
    return total / max(count, 1)


class TrainJob(TrainingJob):
    """A picklable transformer-training call for submitit: one task per GPU, checkpointable
    (drr.core.launch.TrainingJob)."""

    out_arg = 3

    def __init__(self, cfg: dict, tokenizer: Path, codes: Path, out: Path,
                 caption_bpe: Path | None = None):
        self.args = (cfg, Path(tokenizer), Path(codes), Path(out),
                     Path(caption_bpe) if caption_bpe else None)

    def train(self) -> Path:
        return train(*self.args)


def main(argv=None) -> None:
    from drr.core.launch import launch

    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--tokenizer", required=True, type=Path, help="tokenizer checkpoint (drr format)")
    p.add_argument("--codes", required=True, type=Path, help="code map folder of the training split")
    p.add_argument("--text-tokenizer", dest="caption_bpe", type=Path,
                   help="the caption BPE's JSON (drr.text.bpe; text-conditional experiments)")
    p.add_argument("--out", required=True, type=Path, help="final transformer checkpoint")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        refuse_imported(cfg, "transformer", args.config[-1])
        job = TrainJob(cfg, args.tokenizer, args.codes, args.out, args.caption_bpe)
        launch(job, cfg["transformer"]["launch"], args.out.parent / "submitit",
               name=f"drr-train-{args.out.parent.name}")


if __name__ == "__main__":
    main()
