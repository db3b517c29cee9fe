"""Pieces every training loop here shares: data order, learning-rate schedules, stop signals,
state saving, the non-finite-loss check and the metrics log.

Data order is a pure function of (seed, step): the global batch of step s is a slice of the
concatenated per-epoch permutations, so a resumed run sees exactly the batches an uninterrupted
run would, and each of W processes takes every W-th element of the global batch. Each epoch's
permutation is computed once and kept (`epoch_permutation`), not once per step.
"""

from __future__ import annotations

import errno
import functools
import json
import math
import os
import signal
import sys
import time
from pathlib import Path

import numpy as np


@functools.lru_cache(maxsize=2)
def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n items in `epoch` (read-only). Two are kept: a step that straddles an
    epoch boundary reads the end of one and the start of the next."""
    perm = np.random.default_rng([seed, epoch]).permutation(n)
    perm.flags.writeable = False
    return perm


def batch_indices(n: int, batch_size: int, step: int, seed: int, rank: int = 0,
                  world: int = 1) -> np.ndarray:
    """Indices (into a dataset of n items) of this process's share of global batch `step`."""
    start, parts, filled = step * batch_size, [], 0
    while filled < batch_size:
        epoch, offset = divmod(start + filled, n)
        part = epoch_permutation(n, seed, epoch)[offset:offset + batch_size - filled]
        parts.append(part)
        filled += len(part)
    batch = parts[0] if len(parts) == 1 else np.concatenate(parts)
    return np.array(batch[rank::world], dtype=np.int64)


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

    The loop checks `.requested` after each step (agreeing across processes, see `Checkpoints`),
    saves its state, then calls `forward()`: a handler that was installed before (submitit's,
    which requeues the job) runs then, after the state is safely on disk. The next run of the same
    command, or the requeued job, resumes from that state.
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

    # When processes were told different things, the one acted on: submitit's requeue signal first.
    PRIORITY = ("SIGINT", "SIGTERM", "SIGUSR1", "SIGUSR2")

    def priority(self) -> int:
        """0 when not told to stop, else the received signal's place in PRIORITY, from 1."""
        return 0 if self.requested is None else self.PRIORITY.index(self.requested) + 1

    def adopt(self, priority: int) -> None:
        """Take the signal of `priority` (the highest any process received) as received."""
        self.requested = self.PRIORITY[priority - 1]

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
    """Append-only JSON-lines log (one object per logged step) that a user can plot.

    The file is opened without following a symbolic link at its own name (O_NOFOLLOW): a link
    planted there is refused with one line, never written through (the rewrite of `truncate_after`
    renames over its name). Only rank 0 writes it.
    """

    def __init__(self, path, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        if enabled:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def truncate_after(self, step: int) -> None:
        """Drop lines logged after `step` (a resumed run rewrites them). A torn last line (the
        process was killed while writing it) is dropped with a warning on stderr: the training
        state, not the log, decides where training resumes. Any other line that is not a JSON
        object is an error naming the file and the line."""
        from drr.core.errors import DrrError
        from drr.core.files import write_text
        if not self.enabled:
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except FileNotFoundError:
            return
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise DrrError(f"{self.path}: is a symbolic link; drr does not write through a link "
                               "at an output's name (remove the link)") from None
            raise
        with os.fdopen(fd, "rb") as f:
            lines = f.read().decode("utf-8", errors="replace").split("\n")
        numbered = [(i, line) for i, line in enumerate(lines, 1) if line.strip()]
        keep = []
        for i, line in numbered:
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise ValueError("not an object")
            except ValueError as e:
                if i == numbered[-1][0]:
                    print(f"warning: {self.path}: dropped its torn last line {i} ({line[:60]!r}), "
                          "left by a run killed while writing it", file=sys.stderr, flush=True)
                    break
                raise DrrError(f"{self.path}: line {i} is not a JSON object ({str(e)[:80]}); "
                               "remove the file or that line") from None
            if record.get("step", 0) <= step:
                keep.append(line)
        write_text(self.path, "".join(line + "\n" for line in keep))

    def write(self, **record) -> None:
        from drr.core.files import open_regular
        if self.enabled:
            record.setdefault("time", time.time())
            with open_regular(self.path, "a") as f:  # O_NOFOLLOW, a regular file only
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


class Checkpoints:
    """When a training loop saves its resumable state, and how it stops when told to.

    `after_step(step)` ends every step; it is a collective (every process calls it at every step).
    The state is saved when `every` steps have passed (None: never by count), when `minutes` of
    wall time have passed since the last save on rank 0's clock (None: never by time), and when
    any process was told to stop (`StopSignal`: SLURM's time-limit warning, preemption, the lock's
    owner watch); one all-reduce of both flags makes every process agree on the step. Every
    process then waits at a barrier until rank 0 has written the file: under SLURM a task that
    exits first can get the whole job killed, rank 0's save and requeue with it. When stopping,
    every process hands the signal to the handler installed before ours (submitit's: rank 0's
    requeues the job, the others' return), waits until rank 0's has, and exits 1 (or as that
    handler exits).
    `finish(step)` saves at the end unless that step is already saved.
    """

    def __init__(self, stop: StopSignal, every: int | None, minutes: float | None, device, run_dir,
                 save_state, main: bool, saved_step: int | None = None, clock=time.monotonic):
        self.stop, self.every, self.minutes, self.device = stop, every, minutes, device
        self.run_dir, self.save_state, self.main, self.clock = Path(run_dir), save_state, main, clock
        self.saved_step = saved_step
        self.last_save = clock()

    def save(self, step: int) -> None:
        from drr.core import distributed
        self.save_state()  # a collective (the RNG states of every process), rank 0 writes
        distributed.barrier()
        self.saved_step, self.last_save = step, self.clock()

    def after_step(self, step: int) -> None:
        from drr.core import checkpoint, distributed
        timed = (self.minutes is not None and self.main
                 and self.clock() - self.last_save >= 60 * self.minutes)
        told, timed = distributed.all_max([self.stop.priority(), timed], self.device)
        if told or timed or (self.every and step % self.every == 0):
            self.save(step)
        if not told:
            return
        self.stop.adopt(int(told))  # a process that was not signalled stops as one that was
        if self.main:
            print(f"stopping on {self.stop.requested} at step {step}; state saved to "
                  f"{checkpoint.state_path(self.run_dir)}; run the same command to resume",
                  file=sys.stderr, flush=True)
        handed_over = None
        try:
            self.stop.forward()
        except BaseException as e:  # submitit requeued (SystemExit) or could not (its error)
            handed_over = e
        distributed.barrier()  # no process exits before rank 0 has requeued the job
        if handed_over is not None:
            raise handed_over
        raise SystemExit(1)

    def finish(self, step: int) -> None:
        if self.saved_step != step:
            self.save(step)


def resume(run_dir, parts: dict, rank: int, main: bool) -> tuple[int, Path | None]:
    """Restore `parts` (name -> model, optimizer or None, as drr.core.checkpoint.restore takes
    them) from the run folder's latest state: (its step, the state file); (0, None) when there is
    no state to resume."""
    from drr.core import checkpoint
    state_file = checkpoint.latest_state(run_dir)
    if state_file is None:
        return 0, None
    step = checkpoint.restore(checkpoint.load_state(state_file), state_file, parts, rank)
    if main:
        print(f"resuming from {state_file} at step {step}", file=sys.stderr, flush=True)
    return step, state_file


def state_checkpoints(stop: StopSignal, tcfg: dict, device, run_dir, world: int, main: bool, state,
                      saved_step: int | None) -> Checkpoints:
    """The Checkpoints of a training loop (`tcfg`: its train section, checkpoint_every and
    checkpoint_minutes), whose save writes `state()` (the step, models, optimizers and config) and
    every process's RNG state to the run folder's state file (rank 0). `saved_step`: the step of
    the state the run resumed from, or None."""
    from drr.core import checkpoint

    def save_state():
        rng = gather_rng_states(world)  # a collective
        if main:
            checkpoint.save({**state(), "rng": rng}, checkpoint.state_path(run_dir))
    return Checkpoints(stop, tcfg["checkpoint_every"], tcfg["checkpoint_minutes"], device, run_dir,
                       save_state, main, saved_step=saved_step)


def check_finite(loss, step: int, rank: int, world: int, device, run_dir) -> None:
    """DrrError on every process when the loss of any process is not finite, naming the first
    such rank and the step; a collective when world > 1, called before the backward pass (a
    process that stopped alone would leave the others waiting in the gradient all-reduce)."""
    from drr.core import checkpoint, distributed
    from drr.core.errors import DrrError
    values = distributed.gather_scalar(loss.detach(), device) if world > 1 else [loss.item()]
    bad = [r for r, v in enumerate(values) if not math.isfinite(v)]
    if not bad:
        return
    where = f" on rank {bad[0]} of {world}" if world > 1 else ""
    state = checkpoint.latest_state(run_dir)
    last = f"the last good state is {state}" if state else "no state was saved before it"
    raise DrrError(f"non-finite loss {values[bad[0]]} at step {step}{where}; {last}")


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
