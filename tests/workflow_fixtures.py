"""A copy of the workflow in a temporary folder, and dry-run plans of it."""

import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
# Stand-ins for what a dry run of suite=paper looks at when the workflow is parsed: the data folders
# (drr.data.check reads a few names, never the images), as empty files in the expected layouts. The
# official releases need none: rule fetch_release makes them, so a dry run plans it.
PAPER_DATA = ("data/imagenet/train/n01440764/n01440764_10026.JPEG",
              "data/imagenet/val/n01440764/ILSVRC2012_val_00000293.JPEG",
              "data/cc3m/train/00000/000000000.jpg", "data/cc3m/train/00000/000000000.txt",
              "data/cc3m/val/00000/000000000.jpg", "data/cc3m/val/00000/000000000.txt")


def copy_workflow(dst: Path, official_standins: bool = False) -> Path:
    """Snakefile, workflow/, configs/, profiles/ (the default profile Snakemake reads beside the
    Snakefile), slurm/ and environment.yml into dst; with `official_standins`, also the stand-in
    data of suite=paper (PAPER_DATA)."""
    for item in ("Snakefile", "workflow", "configs", "profiles", "slurm", "environment.yml"):
        src = REPO / item
        (shutil.copytree if src.is_dir() else shutil.copy)(src, dst / item)
    if official_standins:
        for name in PAPER_DATA:
            f = dst / name
            f.parent.mkdir(parents=True, exist_ok=True)
            f.write_bytes(b"")
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
