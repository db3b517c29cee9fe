"""Where a job computes and in what precision: the one place training, sampling and the metrics
pick their device (the code-map encoding and the model reports still choose their own).

``pick_device(setting)`` turns the config key ``device`` (or a ``--device`` option) into a
torch.device:

    auto    CUDA when torch sees a GPU, else the CPU (the tiny and small suites on a laptop). When
            the job's environment declares GPUs (SLURM_GPUS_ON_NODE, SLURM_JOB_GPUS, SLURM_GPUS,
            SLURM_STEP_GPUS, or a CUDA_VISIBLE_DEVICES naming devices) but torch sees none, one
            warning line on stderr says so and why, and the job runs on the CPU.
    cuda    a GPU or a stop: without CUDA, a one-line DrrError (exit status 2) names the driver the
            installed torch needs (from torch.version.cuda), the driver found, and `nvidia-smi`.
            The paper's experiment configs ask for it, so that none of their jobs runs on a node's
            CPU at a fraction of the speed. ``cuda:N`` picks device N.
    cpu     the CPU, whatever the machine has.

``autocast(device, precision, tf32=...)`` is the precision of a block: bf16 autocast for 'bf16'
(and for 'auto' on CUDA, the training default), none for 'fp32'; with ``tf32`` the fp32 matmuls
and convolutions on CUDA use TF32 inside the block (sampling asks for it; the previous settings
come back on exit, so the Inception network of the metrics, which a process may run afterwards,
stays in full fp32).
"""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path

import torch

from drr.core.errors import DrrError

DEVICES = ("auto", "cuda", "cpu")
PRECISIONS = ("auto", "fp32", "bf16")

# Minimum Linux driver of each CUDA major version under minor-version compatibility (NVIDIA's CUDA
# compatibility guide, "CUDA Toolkit and Minimum Driver Version"): a torch wheel built for CUDA
# 13.x runs on a driver >= 580, for 12.x on >= 525, for 11.x on >= 450.
MIN_DRIVER = {13: 580, 12: 525, 11: 450}

# Environment variables by which SLURM (and a user, with CUDA_VISIBLE_DEVICES) give a job GPUs.
GPU_VARIABLES = ("SLURM_GPUS_ON_NODE", "SLURM_JOB_GPUS", "SLURM_STEP_GPUS", "SLURM_GPUS",
                 "CUDA_VISIBLE_DEVICES")
DRIVER_FILE = Path("/proc/driver/nvidia/version")


def declared_gpus(environ=os.environ) -> str | None:
    """'NAME=VALUE' of the first variable of GPU_VARIABLES that gives this job GPUs, else None.
    A CUDA_VISIBLE_DEVICES of '', '-1' or 'NoDevFiles' (SLURM's word for none) gives none, and so
    does a SLURM count of 0."""
    for name in GPU_VARIABLES:
        value = environ.get(name, "").strip()
        none = ("", "-1", "NoDevFiles") if name == "CUDA_VISIBLE_DEVICES" else ("", "0")
        if value not in none:
            return f"{name}={value}"
    return None


def driver_version(path: Path | None = None) -> str | None:
    """The loaded NVIDIA kernel driver's version ('580.65.06', from DRIVER_FILE), or None when
    there is none."""
    try:
        text = (path or DRIVER_FILE).read_text()
    except OSError:
        return None
    for word in text.split():
        parts = word.split(".")
        if len(parts) >= 2 and all(p.isdigit() for p in parts):
            return word
    return None


def cuda_requirement() -> str:
    """What the installed torch needs to see a GPU, in words (from torch.version.cuda)."""
    built = torch.version.cuda
    if built is None:
        return (f"torch {torch.__version__} is a CPU-only build; install the locked PyPI build "
                "(requirements.lock), which is built for CUDA")
    major = int(built.split(".")[0])
    need = MIN_DRIVER.get(major)
    driver = f"NVIDIA driver >= {need}" if need else f"an NVIDIA driver for CUDA {built}"
    return f"torch {torch.__version__} is built for CUDA {built} and needs an {driver}"


def no_cuda_reason() -> str:
    """Why torch sees no GPU here, with how to check: one line without a trailing period."""
    found = driver_version()
    node = platform.node() or "this machine"
    here = (f"{node} has driver {found}" if found else f"{node} has no NVIDIA driver loaded")
    return f"{cuda_requirement()} ({here}); check with `nvidia-smi` (docs/cluster.md, 'GPU driver')"


def pick_device(setting: str | None = "auto", index: int | None = None,
                key: str = "device") -> torch.device:
    """The torch.device for a `device` setting (module docstring). `index`: the GPU of this process
    (a data-parallel job's local rank) where the setting names none. `key` names the setting in
    errors (the config key, or a command-line option)."""
    setting = "auto" if setting is None else str(setting)
    kind, _, number = setting.partition(":")
    if kind not in DEVICES or (number and (kind != "cuda" or not number.isdigit())):
        raise DrrError(f"{key}: {setting!r} is not one of auto, cuda, cuda:N, cpu")
    if kind == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        if kind == "cuda":
            raise DrrError(f"{key}: {setting!r} asks for a GPU, but torch sees none: "
                           f"{no_cuda_reason()}")
        declared = declared_gpus()
        if declared:
            print(f"warning: {key} 'auto': {declared} gives this job a GPU, but torch sees none, "
                  f"so it runs on the CPU: {no_cuda_reason()}", file=sys.stderr, flush=True)
        return torch.device("cpu")
    gpu = int(number) if number else (index or 0)
    if gpu >= torch.cuda.device_count():
        raise DrrError(f"{key}: {setting!r} asks for GPU {gpu}, but torch sees "
                       f"{torch.cuda.device_count()} (check with `nvidia-smi`)")
    return torch.device("cuda", gpu)


def job_device(cfg: dict, option: str | None = None, index: int | None = None) -> torch.device:
    """The device of a job: its --device `option` when given, else the config's `device` key."""
    if option:
        return pick_device(option, index, key="--device")
    return pick_device(cfg["device"], index)


def device_name(device: torch.device) -> str:
    """The GPU's name, or the CPU's with its intra-op threads (for records and reports)."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA runs asynchronously; the CPU needs no wait)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def check_precision(precision: str, key: str = "precision", allowed=PRECISIONS) -> str:
    if precision not in allowed:
        raise DrrError(f"{key}: {precision!r} is not one of {', '.join(allowed)}")
    return precision


@contextlib.contextmanager
def autocast(device: torch.device, precision: str, tf32: bool = False, key: str = "precision"):
    """The precision of the block: bf16 autocast for 'bf16' (on CUDA or on the CPU) and for 'auto'
    on CUDA; none for 'fp32' and for 'auto' on the CPU. tf32: on CUDA, TF32 for the fp32 matmuls
    and convolutions inside the block, the previous settings restored on exit."""
    check_precision(precision, key)
    bf16 = precision == "bf16" or (precision == "auto" and device.type == "cuda")
    with contextlib.ExitStack() as stack:
        if tf32 and device.type == "cuda":
            stack.enter_context(_tf32())
        stack.enter_context(torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16))
        yield


@contextlib.contextmanager
def _tf32():
    matmul, cudnn = torch.get_float32_matmul_precision(), torch.backends.cudnn.allow_tf32
    torch.set_float32_matmul_precision("high")
    torch.backends.cudnn.allow_tf32 = True
    try:
        yield
    finally:
        torch.set_float32_matmul_precision(matmul)
        torch.backends.cudnn.allow_tf32 = cudnn
