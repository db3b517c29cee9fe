"""Train an RQ-VAE tokenizer (paper §3.1, App. A.1).

    python -m drr.tokenizer.train --config configs/experiments/tiny.yaml \
        --out results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt

Writes next to --out: config.yaml (resolved config), metrics.jsonl (loss, lr, PSNR, codebook use,
images/s per logged step) and train-state.pt (everything needed to resume). To resume after a kill,
a preemption or a time limit, run the same command again. --out is written only when training ends.

Multi-GPU: launch one process per GPU (torchrun, or submitit); the batch is split across processes.
"""

from __future__ import annotations

import math
import sys
import time
from pathlib import Path

import torch

from drr.core import checkpoint, distributed
from drr.core.cli import config_parser, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.lock import hold, is_rank0
from drr.core.progress import Progress
from drr.core.training import (
    Checkpoints,
    MetricsLog,
    StepBatchSampler,
    StopSignal,
    check_finite,
    gather_rng_states,
    save_run_config,
    start_run,
    warmup_constant,
)


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, R, R) in [0, 255] -> float in [-1, 1]."""
    return images_uint8.float().div(127.5).sub(1.0)


def train(cfg: dict, out: Path) -> Path:
    from drr.data import build_dataset, collate
    from drr.tokenizer.io import save_tokenizer
    from drr.tokenizer.losses import TokenizerLoss
    from drr.tokenizer.model import RQVAE, RQVAEConfig

    rank, world, device, run_dir = start_run(cfg, "tokenizer", out)
    main = rank == 0
    tcfg = cfg["tokenizer"]["train"]
    dataset = build_dataset(cfg["data"], cfg["data"]["train_split"])
    model = RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])).to(device)
    loss_fn = TokenizerLoss(cfg["tokenizer"]["loss"], cfg["tokenizer"]["model"]["in_channels"]).to(device)
    opt_g = torch.optim.Adam(model.parameters(), lr=tcfg["lr"], betas=tuple(tcfg["betas"]))
    opt_d = (torch.optim.Adam(loss_fn.disc.parameters(), lr=tcfg["lr"], betas=tuple(tcfg["betas"]))
             if loss_fn.disc is not None else None)

    step = 0
    state_file = checkpoint.latest_state(run_dir)
    if state_file is not None:
        step = checkpoint.restore(checkpoint.load_state(state_file), state_file, {
            "model": model, "opt_g": opt_g, "disc": loss_fn.disc if opt_d is not None else None,
            "opt_d": opt_d}, rank)
        if main:
            print(f"resuming from {state_file} at step {step}", file=sys.stderr, flush=True)

    save_run_config(cfg, run_dir, main)  # inputs and state read: nothing invalid is recorded
    ddp = (torch.nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)
           if world > 1 else model)
    log = MetricsLog(run_dir / "metrics.jsonl", enabled=main)
    log.truncate_after(step)
    sampler = StepBatchSampler(len(dataset), tcfg["batch_size"], cfg["seed"], step, tcfg["steps"],
                               rank, world)
    # The loader draws its worker seed from its own generator, not the global RNG, so that a resumed
    # run's random stream (code restarts, dropout) continues exactly where the stopped one left it.
    loader = torch.utils.data.DataLoader(dataset, batch_sampler=sampler, collate_fn=collate,
                                         num_workers=tcfg["num_workers"],
                                         generator=torch.Generator().manual_seed(cfg["seed"]))
    progress = Progress(tcfg["steps"], "train_tokenizer", start=step, enabled=main)
    stop = StopSignal()

    def save_state():
        rng = gather_rng_states(world)
        if main:
            checkpoint.save({"step": step, "model": model.state_dict(), "opt_g": opt_g.state_dict(),
                             "disc": loss_fn.disc.state_dict() if opt_d else None,
                             "opt_d": opt_d.state_dict() if opt_d else None, "rng": rng,
                             "config": cfg}, checkpoint.state_path(run_dir))
    saves = Checkpoints(stop, tcfg["checkpoint_every"], tcfg["checkpoint_minutes"], device, run_dir,
                        save_state, main, saved_step=step if state_file is not None else None)

    model.train()
    t_log, n_log = time.monotonic(), 0
    for batch in loader:
        x = to_model_range(batch["image"].to(device, non_blocking=True))
        lr = warmup_constant(step, tcfg["lr"], tcfg["warmup_steps"])
        for group in opt_g.param_groups:
            group["lr"] = lr
        with distributed.autocast(device, tcfg["precision"]):
            recon, commitment, codes = ddp(x)
            loss, parts = loss_fn.generator_loss(x, recon.float(), commitment, step,
                                                 model.get_last_layer())
        check_finite(loss, step, rank, world, device, run_dir)  # a collective, before DDP's one
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        if tcfg["grad_clip"] is not None:
            torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
        opt_g.step()
        if opt_d is not None and loss_fn.gan_active(step):
            for group in opt_d.param_groups:
                group["lr"] = lr
            with distributed.autocast(device, tcfg["precision"]):
                d_loss = loss_fn.discriminator_loss(x, recon.float())
            opt_d.zero_grad(set_to_none=True)
            d_loss.backward()
            opt_d.step()
            parts["d_loss"] = d_loss.detach()
        step += 1
        n_log += len(x) * world
        mse01 = parts["rec"].item() / 4.0  # MSE on [0, 1] images
        progress.update(loss=loss.item(), psnr=-10 * math.log10(max(mse01, 1e-10)))
        if step % tcfg["log_every"] == 0 or step == tcfg["steps"]:
            used = [codes[..., d].unique().numel() for d in range(codes.shape[-1])]
            now = time.monotonic()
            log.write(step=step, lr=lr, loss=loss.item(), psnr=-10 * math.log10(max(mse01, 1e-10)),
                      images_per_s=n_log / max(now - t_log, 1e-9), codes_used_in_batch=used,
                      **{k: float(v) for k, v in parts.items()})
            t_log, n_log = now, 0
        saves.after_step(step)
    stop.restore()

    saves.finish(step)  # a collective: every process takes part
    if main:
        save_tokenizer(model, cfg, out, trained_steps=step)
        print(f"wrote {out}", file=sys.stderr)
    distributed.barrier()
    return out


def main(argv=None) -> None:
    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="final tokenizer checkpoint")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        if cfg["tokenizer"]["checkpoint"] is not None:
            raise DrrError(f"{args.config[-1]}: key 'tokenizer.checkpoint' is set, so this tokenizer "
                           "is imported, not trained: use python -m drr.tokenizer.import_official")
        with hold(args.out.parent, args.out.name, enabled=is_rank0()):
            train(cfg, args.out)


if __name__ == "__main__":
    main()
