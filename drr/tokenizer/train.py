"""Train an RQ-VAE tokenizer (paper §3.1, App. A.1).

    python -m drr.tokenizer.train --config configs/experiments/tiny.yaml \
        --out results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt

Writes next to --out: config.yaml (resolved config), metrics.jsonl (loss, lr, PSNR, codebook use,
images/s per logged step) and train-state.pt (everything needed to resume). To resume after a kill,
a preemption or a time limit, run the same command again. --out is written only when training ends.

`tokenizer.launch.executor` decides where it runs, as for transformers (drr.core.launch):
`inprocess` (this process; torchrun for several GPUs), `local` (submitit's local executor, one
process per "GPU") or `slurm` (submitit submits a job of nodes x gpus_per_node tasks and this
command waits for it; at the time limit the job saves its state and requeues itself). The global
batch (`tokenizer.train.batch_size`) is split over the processes; each process's share goes
through the model in micro-batches of at most `tokenizer.train.micro_batch_size` images, their
gradients accumulated into one optimizer step. The codebooks take one EMA step on the whole batch's
encoder outputs, as without micro-batches: with a single codebook (D = 1) or one per depth, each
micro-batch is quantized with the codebook from before the step and the step's statistics are
folded in once at its end; with a codebook shared by D > 1 depths (where depth d is quantized with
the codebook already updated by depth d-1), the whole share is encoded once without gradients
first and quantized in one call. So the gradients are the whole batch's to float rounding, except
the adversarial term: VQGAN's adaptive weight and the discriminator's batch statistics are per
micro-batch, as they are per process (and per GPU in VQGAN's own code).
"""

from __future__ import annotations

import contextlib
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from drr.core import distributed
from drr.core.cli import config_parser, refuse_imported, resolve
from drr.core.errors import DrrError, user_errors
from drr.core.launch import TrainingJob
from drr.core.progress import Progress
from drr.core.training import (
    MetricsLog,
    StepBatchSampler,
    StopSignal,
    check_finite,
    resume,
    save_run_config,
    start_run,
    state_checkpoints,
    warmup_constant,
)


def to_model_range(images_uint8: torch.Tensor) -> torch.Tensor:
    """uint8 (B, 3, R, R) in [0, 255] -> float in [-1, 1]."""
    return images_uint8.float().div(127.5).sub(1.0)


def micro_batch_size(tcfg: dict, world: int) -> int:
    """Images per forward/backward pass on one process: tokenizer.train.micro_batch_size, at most
    the process's share of the batch (null: the whole share); it must divide the share."""
    share = tcfg["batch_size"] // world
    micro = min(tcfg["micro_batch_size"] or share, share)
    if share % micro:
        raise DrrError(f"tokenizer.train.micro_batch_size {micro} does not divide the {share} images "
                       f"each of the {world} processes takes of tokenizer.train.batch_size "
                       f"{tcfg['batch_size']}")
    return micro


class TrainForward(torch.nn.Module):
    """The RQ-VAE's training forward, wrapped once in DistributedDataParallel.

    ``forward(x)`` is the model's own (the codebooks take their EMA step); with ``quantized``
    (partial sums and codes found for the whole batch) or ``deferred`` (codes found with the
    codebook from before the step, no update) it computes the same outputs for a micro-batch,
    and returns the encoder output too (the deferred update folds it in at the end of the step).
    """

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, quantized=None, deferred: bool = False):
        if quantized is None and not deferred:
            return self.model(x)
        m = self.model
        z = m.encode_features(x)  # (B, H, W, n_z)
        sums, codes = quantized if quantized is not None else m.quantizer.quantize(z, update=False)
        # ResidualQuantizer.forward's straight-through estimator and commitment loss
        z_hat = sums[..., -1, :].to(z.dtype)
        commitment = torch.stack([F.mse_loss(z.float(), sums[..., d, :])
                                  for d in range(sums.shape[-2])]).mean()
        recon = m.decode_features(z + (z_hat - z).detach())
        return recon, commitment, codes, z.detach()


def deferred_codebook_update(quantizer, z: torch.Tensor, codes: torch.Tensor) -> None:
    """The EMA step `quantizer.quantize(z, update=True)` takes, for codes already found with the
    codebooks from before the step (exact for one codebook per depth, or D = 1): the residual of
    each depth recomputed as quantize computes it, then each depth's update in order (a collective
    in a torch.distributed run, as in quantize). Shape: z (N, H, W, n_z), codes (N, H, W, D)."""
    with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
        residual = z.float().reshape(-1, quantizer.embed_dim)
        flat = codes.reshape(-1, quantizer.depth)
        for d, codebook in enumerate(quantizer.codebooks):
            codebook.update_buffers(residual, flat[:, d])
            residual = residual - codebook.lookup(flat[:, d])
            codebook.update_embeddings()


def train(cfg: dict, out: Path) -> Path:
    from drr.data import build_dataset, collate
    from drr.tokenizer.io import save_tokenizer
    from drr.tokenizer.losses import TokenizerLoss
    from drr.tokenizer.model import RQVAE, RQVAEConfig

    rank, world, device, run_dir = start_run(cfg, "tokenizer", out)
    main = rank == 0
    tcfg = cfg["tokenizer"]["train"]
    micro = micro_batch_size(tcfg, world)
    dataset = build_dataset(cfg["data"], cfg["data"]["train_split"])
    model = RQVAE(RQVAEConfig(**cfg["tokenizer"]["model"])).to(device)
    loss_fn = TokenizerLoss(cfg["tokenizer"]["loss"], cfg["tokenizer"]["model"]["in_channels"],
                            weights_dir=cfg["metrics"]["weights_dir"]).to(device)
    opt_g = torch.optim.Adam(model.parameters(), lr=tcfg["lr"], betas=tuple(tcfg["betas"]))
    opt_d = (torch.optim.Adam(loss_fn.disc.parameters(), lr=tcfg["lr"], betas=tuple(tcfg["betas"]))
             if loss_fn.disc is not None else None)

    step, state_file = resume(run_dir, {"model": model, "opt_g": opt_g,
                                        "disc": loss_fn.disc if opt_d is not None else None,
                                        "opt_d": opt_d}, rank, main)
    if state_file is None and main:
        print(f"training the tokenizer on {len(dataset)} images, {world} process(es) of "
              f"{tcfg['batch_size'] // world} images a step in micro-batches of {micro}, device "
              f"{device}", file=sys.stderr, flush=True)

    save_run_config(cfg, run_dir, main)  # inputs and state read: nothing invalid is recorded
    fwd = TrainForward(model)
    ddp = (torch.nn.parallel.DistributedDataParallel(fwd, broadcast_buffers=False)
           if world > 1 else fwd)
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

    saves = state_checkpoints(
        stop, tcfg, device, run_dir, world, main,
        lambda: {"step": step, "model": model.state_dict(), "opt_g": opt_g.state_dict(),
                 "disc": loss_fn.disc.state_dict() if opt_d else None,
                 "opt_d": opt_d.state_dict() if opt_d else None, "config": cfg},
        saved_step=step if state_file is not None else None)

    def finite(loss):
        check_finite(loss, step, rank, world, device, run_dir)  # a collective, before DDP's one

    model.train()
    t_log, n_log = time.monotonic(), 0
    for batch in loader:
        x = to_model_range(batch["image"].to(device, non_blocking=True))
        lr = warmup_constant(step, tcfg["lr"], tcfg["warmup_steps"])
        for group in opt_g.param_groups:
            group["lr"] = lr
        if micro == len(x):
            loss, parts, codes, recon = whole_step(ddp, model, loss_fn, opt_g, x, step, tcfg,
                                                   device, finite)
        else:
            loss, parts, codes, recon = accumulated_step(ddp, model, loss_fn, opt_g, x, micro, step,
                                                         tcfg, device, finite)
        if opt_d is not None and loss_fn.gan_active(step):
            for group in opt_d.param_groups:
                group["lr"] = lr
            parts["d_loss"] = discriminator_step(loss_fn, opt_d, x, recon, micro, tcfg, device,
                                                 world)
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


def whole_step(ddp, model, loss_fn, opt_g, x, step: int, tcfg: dict, device, finite):
    """One generator step on the process's whole share in one pass. Returns (loss, its parts,
    codes, reconstructions) for the log and the discriminator step."""
    with distributed.autocast(device, tcfg["precision"]):
        recon, commitment, codes = ddp(x)
        loss, parts = loss_fn.generator_loss(x, recon.float(), commitment, step,
                                             model.get_last_layer())
    finite(loss)
    opt_g.zero_grad(set_to_none=True)
    loss.backward()
    if tcfg["grad_clip"] is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
    opt_g.step()
    return loss, parts, codes, recon


def accumulated_step(ddp, model, loss_fn, opt_g, x, micro: int, step: int, tcfg: dict, device,
                     finite):
    """One generator step on the process's share in micro-batches of `micro` images: each
    micro-batch's loss, weighted by its share of the images, is backpropagated at once (its
    activations freed), the gradients summed; DDP averages them over the processes on the last
    micro-batch only. The codebooks take one EMA step on the whole share (module docstring).
    Returns what `whole_step` returns (loss and parts averaged over the micro-batches)."""
    chunks = x.split(micro)
    quantizer = model.quantizer
    quantized = None
    if quantizer.shared_codebook and quantizer.depth > 1:
        with torch.no_grad(), distributed.autocast(device, tcfg["precision"]):
            z = torch.cat([model.encode_features(c) for c in chunks])
        sums, codes_all = quantizer.quantize(z, update=True)
        quantized = list(zip(sums.split(micro), codes_all.split(micro)))
        del z
    opt_g.zero_grad(set_to_none=True)
    total, parts, codes, recons, encoded = 0.0, {}, [], [], []
    for i, c in enumerate(chunks):
        weight = len(c) / len(x)
        last = i == len(chunks) - 1
        sync = ddp.no_sync() if hasattr(ddp, "no_sync") and not last else contextlib.nullcontext()
        with sync:
            with distributed.autocast(device, tcfg["precision"]):
                recon, commitment, codes_c, z_c = ddp(
                    c, quantized=None if quantized is None else quantized[i],
                    deferred=quantized is None)
                loss, parts_c = loss_fn.generator_loss(c, recon.float(), commitment, step,
                                                       model.get_last_layer())
            finite(loss)
            (loss * weight).backward()
        total = total + loss.detach() * weight
        for k, v in parts_c.items():
            parts[k] = parts.get(k, 0.0) + v.detach().float() * weight
        codes.append(codes_c)
        recons.append(recon.detach())
        if quantized is None:
            encoded.append(z_c)
    codes = torch.cat(codes)
    if quantized is None:
        deferred_codebook_update(quantizer, torch.cat(encoded), codes)
    if tcfg["grad_clip"] is not None:
        torch.nn.utils.clip_grad_norm_(model.parameters(), tcfg["grad_clip"])
    opt_g.step()
    return total, parts, codes, torch.cat(recons)


def discriminator_step(loss_fn, opt_d, x, recon, micro: int, tcfg: dict, device,
                       world: int) -> torch.Tensor:
    """One PatchGAN step on real images and the step's reconstructions, in the generator step's
    micro-batches (each one's loss weighted by its share of the images). With several processes
    the gradients are averaged over them, so every process keeps the same discriminator. Returns
    the loss."""
    opt_d.zero_grad(set_to_none=True)
    total = 0.0
    for xc, rc in zip(x.split(micro), recon.split(micro)):
        with distributed.autocast(device, tcfg["precision"]):
            d_loss = loss_fn.discriminator_loss(xc, rc.float())
        (d_loss * (len(xc) / len(x))).backward()
        total = total + d_loss.detach() * (len(xc) / len(x))
    if world > 1:
        for p in loss_fn.disc.parameters():
            if p.grad is not None:
                torch.distributed.all_reduce(p.grad)
                p.grad /= world
    opt_d.step()
    return total


class TrainJob(TrainingJob):
    """A picklable tokenizer-training call for submitit (drr.core.launch.TrainingJob: the loop
    saves its state on submitit's signal, then submitit requeues the job, which resumes from the
    run folder's state)."""

    out_arg = 1

    def __init__(self, cfg: dict, out: Path):
        self.args = (cfg, Path(out))

    def train(self) -> Path:
        return train(*self.args)


def main(argv=None) -> None:
    from drr.core.launch import launch

    p = config_parser(__doc__.splitlines()[0])
    p.add_argument("--out", required=True, type=Path, help="final tokenizer checkpoint")
    args = p.parse_args(argv)
    with user_errors():
        cfg = resolve(args)
        refuse_imported(cfg, "tokenizer", args.config[-1])
        micro_batch_size(cfg["tokenizer"]["train"], 1)  # a bad value fails here, not in a job
        launch(TrainJob(cfg, args.out), cfg["tokenizer"]["launch"], args.out.parent / "submitit",
               name=f"drr-tokenizer-{args.out.parent.name}")


if __name__ == "__main__":
    main()
