"""Training state on disk: one file per run, replaced atomically, found by one function.

`state_path(run_dir)` is the single place that names the resumable state file: the training loop
saves there and a restarted or requeued job (SLURM preemption, a rerun of the same command) loads
from there, so the saver and the requeue code cannot disagree on the name.

Also the reading and strict key/shape check of official-layout files (``{'state_dict': ...}``) that
the RQ-VAE and RQ-Transformer imports share.
"""

from __future__ import annotations

import pickle
import random
from pathlib import Path

import numpy as np
import torch

from drr.errors import DrrError
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


# --- official-layout checkpoints ({'state_dict': ...}) ---------------------------------------------

MAX_LISTED = 3  # mismatched keys named in an error message


def read_official_state_dict(path, layout: str) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an official-layout checkpoint file (tensors on the CPU), or a
    DrrError naming the file; `layout` names the expected layout in the message."""
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise DrrError(f"{path}: checkpoint file not found") from None
    except (pickle.UnpicklingError, RuntimeError, EOFError, OSError, ValueError) as e:
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DrrError(f"{path}: not a readable torch checkpoint ({first_line})") from None
    if not isinstance(ckpt, dict) or "state_dict" not in ckpt:
        raise DrrError(f"{path}: expected a dict with a 'state_dict' entry (the official {layout} layout)")
    state_dict = ckpt["state_dict"]
    if not isinstance(state_dict, dict):
        raise DrrError(f"{path}: 'state_dict' is a {type(state_dict).__name__}, not a dict of tensors")
    for key, value in state_dict.items():
        if not isinstance(value, torch.Tensor):
            raise DrrError(f"{path}: key {key!r} is a {type(value).__name__}, not a tensor")
    return state_dict


def check_keys_and_shapes(state_dict: dict, expected: dict[str, tuple], path, what: str) -> None:
    """DrrError naming the file and the first mismatched keys unless `state_dict` has exactly the
    keys of `expected` with those shapes; `what` names the config in the message."""
    problems = []
    for key, want in expected.items():
        if key not in state_dict:
            problems.append(f"key '{key}' is missing (expected shape {tuple(want)})")
        elif tuple(state_dict[key].shape) != tuple(want):
            problems.append(f"key '{key}' has shape {tuple(state_dict[key].shape)}, expected {tuple(want)}")
    for key in state_dict:
        if key not in expected:
            problems.append(f"key '{key}' is unexpected for this {what} config")
    if problems:
        listed = "; ".join(problems[:MAX_LISTED])
        more = f" (and {len(problems) - MAX_LISTED} more; {len(problems)} mismatched keys in all)" \
            if len(problems) > MAX_LISTED else ""
        raise DrrError(f"{path}: {listed}{more}")


def adopt_state_dict(model: torch.nn.Module, state_dict: dict, path) -> torch.nn.Module:
    """Load `state_dict` (already checked) into `model` built on the meta device, adopting the
    tensors instead of copying them; the model comes back trainable, in eval mode."""
    model.load_state_dict(state_dict, strict=True, assign=True)
    for name, t in list(model.named_parameters()) + list(model.named_buffers()):
        if t.is_meta:  # cannot happen with strict loading; a guard against silent garbage
            raise DrrError(f"{path}: key '{name}' was not loaded")
    for p in model.parameters():
        p.requires_grad_(True)
    return model.eval()
