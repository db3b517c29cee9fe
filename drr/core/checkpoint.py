"""Training state on disk: one file per run, replaced atomically, found by one function.

`state_path(run_dir)` is the single place that names the resumable state file: the training loop
saves there and a restarted or requeued job (SLURM preemption, a rerun of the same command) loads
from there, so the saver and the requeue code cannot disagree on the name.

Every torch file a user can hand drr (a checkpoint, a training state, network weights) is read by
`load_file`: ``torch.load(weights_only=True)``, which unpickles only tensors and plain containers
and values (plus the few types a caller lists), so a file can never run code; a file that needs
anything else is refused with one line naming it and the type it asked for.

Also the reading and strict key/shape check of official-layout files (``{'state_dict': ...}``) that
the RQ-VAE and RQ-Transformer imports share.
"""

from __future__ import annotations

import pickle
import random
import re
import zipfile
from pathlib import Path

import numpy as np
import torch
from numpy._core.multiarray import _reconstruct

from drr.core.errors import DrrError
from drr.core.files import atomic_path

STATE_NAME = "train-state.pt"


def state_path(run_dir) -> Path:
    return Path(run_dir) / STATE_NAME


def latest_state(run_dir) -> Path | None:
    """The resumable state of a run, or None for a fresh start."""
    p = state_path(run_dir)
    return p if p.exists() else None


# numpy's RNG state (np.random.get_state(): a uint32 array) in a training state: the only types
# beyond torch's weights-only set that a drr file holds. Rebuilding an array of plain numbers runs
# no code.
NUMPY_ARRAY_GLOBALS = (np.ndarray, np.dtype, type(np.dtype(np.uint32)), _reconstruct)

_GLOBAL = re.compile(r"GLOBAL ([\w.]+)")


def load_file(path, what: str, allow=(), mmap: bool = False):
    """The object in torch file `path`, loaded with ``weights_only=True`` (tensors on the CPU;
    `mmap`: memory-mapped, read only where touched), `allow` naming the extra types it may hold; DrrError naming the file, `what` it should be, and
    why it cannot be read (absent, empty, truncated, not a torch file, or asking for another
    Python object, which is refused: a file drr is handed never runs code)."""
    path = Path(path)
    if not path.is_file():
        raise DrrError(f"{path}: {what} not found")
    if path.stat().st_size == 0:
        raise DrrError(f"{path}: {what} is an empty file")
    try:
        with torch.serialization.safe_globals(list(allow)):
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as e:
        found = _GLOBAL.search(str(e))
        if found is None:
            raise DrrError(f"{path}: not a readable {what} (not a torch file, or a damaged one)") from None
        raise DrrError(f"{path}: refused as {what}: it asks to build {found.group(1)}, and drr "
                       "loads only tensors and plain values from a file (a file never runs code)") from None
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, TypeError, AttributeError,
            IndexError, zipfile.BadZipFile, UnicodeDecodeError) as e:
        text = str(e).strip()
        first = text.splitlines()[0] if text else type(e).__name__
        if "weights_only" in first:
            first = type(e).__name__
        raise DrrError(f"{path}: not a readable {what} ({first[:160]})") from None


def load_state(path) -> dict:
    """A training state (train-state.pt) saved by `save`, safely loaded; DrrError if it is not one."""
    state = load_file(path, "training state", allow=NUMPY_ARRAY_GLOBALS)
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise DrrError(f"{path}: field 'step' is missing: not a drr training state")
    return state


def restore(state: dict, path, parts: dict, rank: int = 0) -> int:
    """Load `parts` (key in the state -> module or optimizer) and this rank's RNG state from a
    training state read by `load_state`; returns its step. DrrError naming the file and key that
    does not fit (a state of another model, or a damaged one)."""
    for key, obj in parts.items():
        if obj is None:
            continue
        try:
            obj.load_state_dict(state[key])
        except KeyError:
            raise DrrError(f"{path}: field '{key}' is missing: not a state of this run") from None
        except (RuntimeError, ValueError, TypeError, AttributeError) as e:
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise DrrError(f"{path}: field '{key}' does not fit this run ({first[:160]})") from None
    try:
        rngs = state["rng"]
        set_rng_state(rngs[rank] if rank < len(rngs) else rngs[0])
    except (KeyError, IndexError, TypeError, ValueError, RuntimeError) as e:
        raise DrrError(f"{path}: field 'rng' is not a saved random state ({type(e).__name__})") from None
    return state["step"]


def save(obj, path) -> None:
    """torch.save to a temporary name, then rename (`atomic_path`, which fsyncs the file before the
    rename and its folder after it): a killed save never leaves a half file, and a crash of the node
    cannot leave an empty or missing file where the previous state was."""
    with atomic_path(path) as tmp:
        try:
            torch.save(obj, tmp)
        except RuntimeError as e:  # torch's zip writer reports a full disk as a RuntimeError
            raise DrrError(f"{path}: cannot be written ({str(e).strip().splitlines()[0][:160]})") from None


def rng_state() -> dict:
    """This process's random state. CUDA: the state of the device it trains on only (a process
    uses one GPU), so a run can resume on nodes with fewer or more GPUs."""
    return {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
        "cuda": (torch.cuda.get_rng_state(torch.cuda.current_device())
                 if torch.cuda.is_available() else []),
    }


def set_rng_state(state: dict) -> None:
    """Restore `rng_state()`'s dict; the CUDA state goes to the current device. A state saved by
    an older drr holds a list of every visible device's state: the current device's entry is
    used (the first where the list is shorter)."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    cuda = state["cuda"]
    if not torch.cuda.is_available() or cuda is None or len(cuda) == 0:
        return
    here = torch.cuda.current_device()
    if isinstance(cuda, (list, tuple)):  # an older state: every visible device's
        cuda = cuda[here] if here < len(cuda) else cuda[0]
    torch.cuda.set_rng_state(cuda, here)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def load_model(path, kind: str, what: str, build, hint: str = ""):
    """A drr model file of `kind` ('drr-tokenizer', 'drr-transformer'): (model built by
    ``build(model_config)`` with the file's weights, the file's dict without them). DrrError naming
    the file and the field that is missing or does not fit; `hint` ends the wrong-kind message."""
    ckpt = load_file(path, what)
    if not isinstance(ckpt, dict) or ckpt.get("kind") != kind:
        raise DrrError(f"{path}: field 'kind' is not '{kind}'{hint}")
    for field in ("model_config", "state_dict"):
        if not isinstance(ckpt.get(field), dict):
            raise DrrError(f"{path}: field '{field}' is missing or not a mapping")
    try:
        model = build(ckpt["model_config"])
    except (TypeError, ValueError, KeyError, AssertionError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DrrError(f"{path}: field 'model_config' does not describe a model ({first[:160]})") from None
    try:
        model.load_state_dict(ckpt.pop("state_dict"))
    except (RuntimeError, ValueError, TypeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DrrError(f"{path}: field 'state_dict' does not fit its model_config ({first[:160]})") from None
    return model, ckpt


# --- official-layout checkpoints ({'state_dict': ...}) ---------------------------------------------

MAX_LISTED = 3  # mismatched keys named in an error message


def read_official_state_dict(path, layout: str, mmap: bool = False) -> dict[str, torch.Tensor]:
    """The ``state_dict`` of an official-layout checkpoint file (tensors on the CPU; `mmap`: see
    `load_file`), or a DrrError naming the file; `layout` names the expected layout in the message."""
    ckpt = load_file(path, f"torch checkpoint (the official {layout} layout)", mmap=mmap)
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
