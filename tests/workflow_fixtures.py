"""A copy of the workflow in a temporary folder, and dry-run plans of it."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# the official files the paper configs import, as empty stand-ins (a dry run only needs paths)
OFFICIAL_FILES = ("imagenet_rqvae/stage1", "cc3m_rqvae/stage1",
                  "imagenet_1.4B_rqvae_50e/stage1", "imagenet_1.4B_rqvae_50e/stage2")


def copy_workflow(dst: Path, official_standins: bool = False) -> Path:
    """Snakefile, workflow/, configs/, slurm/ and environment.yml (the rules' conda env) into dst."""
    for item in ("Snakefile", "workflow", "configs", "slurm", "environment.yml"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / item)
    if official_standins:
        for name in OFFICIAL_FILES:
            w = dst / f"weights/rq-vae-transformer/{name}/model.pt"
            w.parent.mkdir(parents=True, exist_ok=True)
            w.write_bytes(b"")
    return dst


def planned_jobs(cwd: Path, *args) -> dict[str, int]:
    """Jobs per rule of `snakemake --dry-run` with these arguments (targets first)."""
    run = subprocess.run([*SNAKEMAKE, *args, "--dry-run", "--quiet", "rules"], cwd=cwd,
                         capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    counts = {}
    for line in run.stdout.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].isdigit():
            counts[parts[0]] = int(parts[1])
    return counts
