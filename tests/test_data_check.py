"""drr.data.check: a missing or mis-laid ImageNet / CC-3M is one line naming the folder, the layout
and the setting, when the workflow plans a job that reads it (and only then: a target that needs no
CC-3M runs without it); the tiny suite's Fashion-MNIST is left alone."""

import shutil
import subprocess

import pytest

from drr.core.config import load_config
from drr.core.errors import DrrError
from drr.data.check import check

from workflow_fixtures import REPO, SNAKEMAKE, copy_workflow

IMAGENET = REPO / "configs/experiments/in256-crq-821m.yaml"
CC3M = REPO / "configs/experiments/cc3m-crq-366m.yaml"


def cfg_at(experiment, root) -> dict:
    return load_config(experiment, {"data": {"root": str(root)}})


def touch(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def error_of(cfg) -> str:
    with pytest.raises(DrrError) as e:
        check(cfg, "configs/experiments/x.yaml")
    message = str(e.value)
    assert "\n" not in message and "set data.root in configs/experiments/x.yaml" in message
    return message


def test_a_missing_root_names_the_folder_and_the_setting(tmp_path):
    message = error_of(cfg_at(IMAGENET, tmp_path / "nowhere"))
    assert f"data.root {tmp_path / 'nowhere'}: folder not found" in message
    assert "<data.root>/<split>/<wnid>/*.JPEG" in message


def test_imagenet_without_class_folders(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    assert f"no class folders in {tmp_path / 'train'}/" in error_of(cfg_at(IMAGENET, tmp_path))
    touch(tmp_path / "train" / "a.JPEG")   # images straight in the split folder
    assert "images directly in" in error_of(cfg_at(IMAGENET, tmp_path))


def test_imagenet_missing_split_and_empty_class_folder(tmp_path):
    touch(tmp_path / "train" / "n01" / "a.JPEG")
    assert "split folder val/ not found" in error_of(cfg_at(IMAGENET, tmp_path))
    (tmp_path / "val" / "n01").mkdir(parents=True)
    assert f"no .JPEG/.jpg/.png images among the first entries of {tmp_path / 'val' / 'n01'}/" \
        in error_of(cfg_at(IMAGENET, tmp_path))
    touch(tmp_path / "val" / "n01" / "b.JPEG")
    check(cfg_at(IMAGENET, tmp_path), "x.yaml")


def test_cc3m_without_shards(tmp_path):
    (tmp_path / "train").mkdir()
    (tmp_path / "val").mkdir()
    message = error_of(cfg_at(CC3M, tmp_path))
    assert f"no img2dataset shards in {tmp_path / 'train'}/" in message
    assert "shard folders 00000/ holding <key>.jpg + <key>.txt, or .tar shards" in message
    (tmp_path / "train" / "00000").mkdir()
    touch(tmp_path / "train" / "00000" / "000000000.txt")     # captions, no images
    assert "no images" in error_of(cfg_at(CC3M, tmp_path))


def test_only_the_named_splits_are_looked_at(tmp_path):
    touch(tmp_path / "train" / "n01" / "a.JPEG")          # no val/ split
    check(cfg_at(IMAGENET, tmp_path), "x.yaml", ["train"])
    with pytest.raises(DrrError, match="split folder val/ not found"):
        check(cfg_at(IMAGENET, tmp_path), "x.yaml", ["val"])


def test_cc3m_in_either_img2dataset_format_passes(tmp_path):
    touch(tmp_path / "train" / "00000" / "000000000.jpg")
    touch(tmp_path / "val" / "00000.tar")
    check(cfg_at(CC3M, tmp_path), "x.yaml")


def test_the_tiny_suite_is_not_checked():
    check(load_config(REPO / "configs/experiments/tiny.yaml"), "tiny.yaml")   # Fashion-MNIST: no-op
    check(load_config(REPO / "configs/experiments/tiny.yaml", {"data": {"root": "/nonexistent"}}),
          "tiny.yaml")


def test_the_workflow_stops_before_any_job_with_the_line(tmp_path):
    cwd = copy_workflow(tmp_path)   # no data in place
    run = subprocess.run([*SNAKEMAKE, "reports/table1.md", "--dry-run", "--config", "suite=paper"],
                         cwd=cwd, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "data.root data/" in line]
    assert len(lines) == 1 and "folder not found" in lines[0], run.stderr[-2000:]
    assert not (cwd / "results").exists()


def dry_run(cwd, target):
    """`snakemake -n --profile slurm TARGET`, the users' command (the profile selects suite=paper)."""
    return subprocess.run([*SNAKEMAKE, "-n", "--profile", "slurm", target], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_table1_needs_no_cc3m_and_table2_does(tmp_path):
    cwd = copy_workflow(tmp_path, official_standins=True)
    shutil.rmtree(cwd / "data" / "cc3m")
    run = dry_run(cwd, "reports/table1.md")
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert "data/cc3m" not in run.stdout + run.stderr
    planned = run.stdout + run.stderr
    assert "rule encode_codes:" in planned and "rule reference_stats:" in planned  # ImageNet's, checked
    run = dry_run(cwd, "reports/table2.md")    # the CC-3M models' table still stops, with the line
    assert run.returncode != 0
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "data.root data/cc3m" in line]
    assert len(lines) == 1 and "folder not found" in lines[0], run.stderr[-3000:]
    assert "configs/experiments/cc3m-crq-" in lines[0]
    assert not (cwd / "results").exists()


def test_a_missing_imagenet_still_stops_table1_before_any_job(tmp_path):
    cwd = copy_workflow(tmp_path, official_standins=True)
    shutil.rmtree(cwd / "data" / "imagenet")
    run = dry_run(cwd, "reports/table1.md")
    assert run.returncode != 0
    lines = [line for line in (run.stdout + run.stderr).splitlines() if "data.root data/" in line]
    assert len(lines) == 1, run.stderr[-3000:]
    assert "data.root data/imagenet: folder not found" in lines[0]
    assert "set data.root in configs/experiments/in256-" in lines[0]
    assert not (cwd / "results").exists()
