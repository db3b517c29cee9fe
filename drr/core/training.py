"""Pieces every training loop here shares: data order, learning-rate schedules, stop signals,
and the metrics log.

Data order is a pure function of (seed, step): the global batch of step s is a slice of the
concatenated per-epoch permutations, so a resumed run sees exactly the batches an uninterrupted
run would, and each of W processes takes every W-th element of the global batch.
"""

from __future__ import annotations

import json
import math
import signal
import time
from pathlib import Path

import numpy as np


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world: int = 1) -> np.ndarray:
    """Indices (into a dataset of n items) of this process's share of global batch `step`."""
    start = step * batch_size
    out = []
    while len(out) < batch_size:
        epoch, offset = divmod(start + len(out), n)
        perm = np.random.default_rng([seed, epoch]).permutation(n)
        out.extend(perm[offset:offset + batch_size - len(out)].tolist())
    return np.asarray(out[rank::world], dtype=np.int64)


def warmup_constant(step: int, base_lr: float, warmup: int) -> float:
    return base_lr * min(1.0, (step + 1) / warmup) if warmup > 0 else base_lr


def warmup_cosine(step: int, base_lr: float, total: int, warmup: int = 0,
                  final_lr: float = 0.0) -> float:
    """Linear warmup, then cosine from base_lr to final_lr at `total` steps (paper App. A.3)."""
    if warmup > 0 and step < warmup:
        return base_lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return final_lr + 0.5 * (base_lr - final_lr) * (1 + math.cos(math.pi * t))


class StopSignal:
    """Set when the job is told it will be stopped: SIGTERM, SIGINT, SIGUSR1 (SLURM's
    ``--signal``), SIGUSR2 (submitit's preemption/timeout signal).

    The loop checks `.requested` after each step (agreeing across processes, see
    `drr.core.distributed.any_flag`), saves its state, then calls `forward()`: a handler that was
    installed before (submitit's, which requeues the job) runs then, after the state is safely on
    disk. The next run of the same command, or the requeued job, resumes from that state.
    """

    SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGUSR2, signal.SIGINT)

    def __init__(self, signals=SIGNALS):
        self.requested = None
        self._old = {}
        for s in signals:
            try:
                self._old[s] = signal.signal(s, self._handler)
            except ValueError:  # not the main thread (e.g. under some launchers)
                pass

    def _handler(self, signum, frame):
        self.requested = signal.Signals(signum).name

    def forward(self) -> None:
        """Hand the received signal to the handler installed before ours, if it was a function."""
        if self.requested is None:
            return
        signum = signal.Signals[self.requested]
        old = self._old.get(signum)
        self.restore()
        if callable(old) and old not in (signal.default_int_handler,):
            old(signum, None)

    def restore(self):
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


class MetricsLog:
    """Append-only JSON-lines log (one object per logged step) that a user can plot."""

    def __init__(self, path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step` (a resumed run rewrites them)."""
        if not (self.enabled and self.path.exists()):
            return
        keep = [line for line in self.path.read_text().splitlines()
                if line.strip() and json.loads(line).get("step", 0) <= step]
        self.path.write_text("".join(line + "\n" for line in keep))

    def write(self, **record) -> None:
        if self.enabled:
            record.setdefault("time", time.time())
            with open(self.path, "a") as f:
                f.write(json.dumps(record) + "\n")


class StepBatchSampler:
    """Batch sampler yielding `batch_indices` for steps start..total-1 (resumable data order)."""

    def __init__(self, n: int, batch_size: int, seed: int, start: int, total: int, rank: int = 0,
                 world: int = 1):
        self.args = (n, batch_size, seed, rank, world)
        self.start, self.total = start, total

    def __len__(self) -> int:
        return max(0, self.total - self.start)

    def __iter__(self):
        n, bs, seed, rank, world = self.args
        for step in range(self.start, self.total):
            yield batch_indices(n, bs, step, seed, rank, world).tolist()


def gather_rng_states(world: int) -> list:
    """Every process's RNG state, indexed by rank (a collective when world > 1)."""
    import torch

    from drr.core import checkpoint
    state = checkpoint.rng_state()
    if world == 1:
        return [state]
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, state)
    return gathered


def checkpoint_or_stop(stop: StopSignal, step: int, every: int, device, run_dir, save_state,
                       main: bool) -> None:
    """End of a training step: save every `every` steps; when any process was told to stop, save,
    hand the signal to the handler installed before ours (submitit's requeue), and exit 1.
    `save_state()` is a collective: every process calls this at every step."""
    import sys

    from drr.core import checkpoint, distributed
    stopping = distributed.any_flag(stop.requested is not None, device)
    if step % every == 0 or stopping:
        save_state()
    if stopping:
        if main:
            print(f"stopping on {stop.requested} at step {step}; state saved to "
                  f"{checkpoint.state_path(run_dir)}; run the same command to resume",
                  file=sys.stderr, flush=True)
        stop.forward()
        raise SystemExit(1)


def resume_difference(old_cfg: dict, cfg: dict, stage: str) -> str | None:
    """The first setting in which the run that saved a state differs from `cfg`, or None: the
    part of the config that can change the stage's result (drr.workflow.plan.stage_config), so logging,
    saving, launch and compile settings may change between a run and its resumption."""
    from drr.core.stages import first_difference
    return first_difference(old_cfg, cfg, stage)


def start_run(cfg: dict, stage: str, out):
    """Common start of a training run of `stage` ('tokenizer' or 'transformer'): refuse to resume
    a state saved by a run of another config (before anything is written), set up the process
    group, check the batch splits over the processes, seed. Returns (rank, world, device, run_dir).
    The resolved config is written (`save_run_config`) once the run's inputs have been read."""
    from drr.core import checkpoint, distributed
    from drr.core.config import read_yaml
    from drr.core.errors import DrrError

    run_dir = Path(out).parent
    state, saved = checkpoint.latest_state(run_dir), run_dir / "config.yaml"
    if state is not None and saved.is_file():
        diff = resume_difference(read_yaml(saved), cfg, stage)
        if diff:
            raise DrrError(f"{state}: resumable state of a run with {diff}; it cannot continue under "
                           f"this config: delete {state.name} in that folder to train from scratch, "
                           "or give another --out")
    rank, world, device = distributed.init(cfg["device"])
    batch = cfg[stage]["train"]["batch_size"]
    if batch % world:
        raise DrrError(f"{stage}.train.batch_size {batch} is not divisible by the {world} processes")
    checkpoint.seed_everything(cfg["seed"])
    return rank, world, device, run_dir


def save_run_config(cfg: dict, run_dir, main: bool) -> None:
    """Write the resolved config next to the run's output (rank 0), after the run's inputs were
    read: a run that fails on its inputs leaves no config.yaml behind and rewrites none."""
    from drr.core.config import save_config
    if main:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        save_config(cfg, Path(run_dir) / "config.yaml")
