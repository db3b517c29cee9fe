"""Training state on disk: one file per run, replaced atomically, found by one function.

`state_path(run_dir)` is the single place that names the resumable state file: the training loop
saves there and a restarted or requeued job (SLURM preemption, a rerun of the same command) loads
from there, so the saver and the requeue code cannot disagree on the name.
"""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from drr.provenance import atomic_path

STATE_NAME = "train-state.pt"


def state_path(run_dir) -> Path:
    return Path(run_dir) / STATE_NAME


def latest_state(run_dir) -> Path | None:
    """The resumable state of a run, or None for a fresh start."""
    p = state_path(run_dir)
    return p if p.exists() else None


def save(obj, path) -> None:
    """torch.save to a temporary name, then rename: a killed save never leaves a half file."""
    with atomic_path(path) as tmp:
        torch.save(obj, tmp)


def rng_state() -> dict:
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_rng_state(state: dict) -> None:
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
