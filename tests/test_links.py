"""No write through a link planted where drr writes.

A symbolic link to a file outside the results (the "victim") is planted at each name a stage
writes: its lock file, its outputs and their temporaries, its shards, the files of a code map's
.partial/ folder, its log. The stage runs as its CLI `main`; the victim must be unchanged (bytes
and mtime) afterwards. A file written in place (a lock file) behind a link is refused in one line
naming it; an output written to a temporary and renamed replaces the link by a regular file.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from transformer_fixtures import REPO, make_tokenizer_and_codes, tiny_config

from drr.core import files, lock
from drr.core.config import save_config
from drr.core.errors import DrrError

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ("transformer.train.steps=3", "generation.num_samples=8", "generation.batch_size=8",
            "generation.shard_size=4")


class Victim:
    """A file outside the results that a planted link points to."""

    def __init__(self, folder: Path):
        self.path = folder / "victim.txt"
        self.path.write_text("the user's own file\n")
        self.mtime = self.path.stat().st_mtime_ns

    def plant(self, at: Path) -> Path:
        at.parent.mkdir(parents=True, exist_ok=True)
        at.symlink_to(self.path)
        return at

    def intact(self) -> bool:
        return (self.path.read_text() == "the user's own file\n"
                and self.path.stat().st_mtime_ns == self.mtime)


@pytest.fixture
def victim(tmp_path):
    return Victim(tmp_path)


def run_main(module: str, argv: list[str], capsys) -> tuple[int, str]:
    import importlib
    capsys.readouterr()
    try:
        importlib.import_module(module).main(argv)
        code = 0
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def refused(module, argv, capsys, expect: str) -> str:
    code, err = run_main(module, argv, capsys)
    errors = [line for line in err.splitlines() if line.startswith("error:")]
    assert code == 2 and len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert re.search(expect, errors[0]), errors[0]
    return errors[0]


def regular(path: Path) -> bool:
    return path.is_file() and not path.is_symlink()


# --- the primitives ------------------------------------------------------------------------------

def test_atomic_path_replaces_a_link_and_never_writes_through_it(tmp_path, victim):
    for target in (tmp_path / "out.txt", tmp_path / "dangling.txt", tmp_path / "to-a-folder"):
        if target.name == "dangling.txt":
            target.symlink_to(tmp_path / "nowhere")
        elif target.name == "to-a-folder":
            (tmp_path / "folder").mkdir()
            target.symlink_to(tmp_path / "folder")
        else:
            victim.plant(target)
        files.write_text(target, "new\n")
        assert regular(target) and target.read_text() == "new\n"
    assert victim.intact() and not (tmp_path / "nowhere").exists()
    assert list((tmp_path / "folder").iterdir()) == []


def test_atomic_path_temporary_is_exclusive_synced_and_keeps_default_permissions(tmp_path, monkeypatch):
    events = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
                        or real_fsync(fd))
    monkeypatch.setattr(os, "replace", lambda a, b: events.append(("replace", str(b))) or real_replace(a, b))
    out = tmp_path / "out.bin"
    with files.atomic_path(out) as tmp:
        st = os.lstat(tmp)  # created by mkstemp (O_EXCL): a regular file of this call's own
        assert tmp.parent == tmp_path and tmp.name.startswith(".out.bin.") and tmp.suffix == ".tmp"
        assert st.st_size == 0 and (st.st_mode & 0o777) == 0o666 & ~files._umask()
        tmp.write_bytes(b"x")
    assert [e[0] for e in events] == ["fsync", "replace", "fsync"]
    assert events[0][1] == str(tmp) and events[1][1] == str(out) and events[2][1] == str(tmp_path)
    assert (out.stat().st_mode & 0o777) == 0o666 & ~files._umask()


def test_atomic_path_refuses_to_replace_a_folder_with_a_file(tmp_path):
    (tmp_path / "out").mkdir()
    with pytest.raises(DrrError, match=r"out: is a folder, and this output is a file"):
        files.write_text(tmp_path / "out", "x")
    assert (tmp_path / "out").is_dir() and not list(tmp_path.glob("*.tmp"))


def test_open_regular_refuses_links_fifos_and_folders(tmp_path, victim):
    link = victim.plant(tmp_path / "log")
    for mode in ("a", "ab", "w", "a+"):
        with pytest.raises(DrrError, match=r"log: is a symbolic link; drr does not write through"):
            files.open_regular(link, mode)
    os.mkfifo(tmp_path / "fifo")  # opening a FIFO for writing would block: refused at once
    with pytest.raises(DrrError, match=r"fifo: is not a regular file"):
        files.open_regular(tmp_path / "fifo", "a")
    (tmp_path / "dir").mkdir()
    with pytest.raises(DrrError, match=r"dir: is not a regular file"):
        files.open_regular(tmp_path / "dir", "a")
    assert victim.intact()
    with files.open_regular(tmp_path / "new", "a") as f:
        f.write("1\n")
    with files.open_regular(tmp_path / "new", "a") as f:
        f.write("2\n")
    assert (tmp_path / "new").read_text() == "1\n2\n"
    with files.open_regular(tmp_path / "new", "w") as f:
        f.write("3\n")
    assert (tmp_path / "new").read_text() == "3\n"


def test_a_link_at_a_lock_file_is_refused(tmp_path, victim):
    victim.plant(lock.lock_path(tmp_path / "run", "checkpoint.pt"))
    with pytest.raises(DrrError, match=r"\.checkpoint\.pt\.lock: is a symbolic link"):
        with lock.hold(tmp_path / "run", "checkpoint.pt", watch=False):
            pass
    assert victim.intact()


# --- the stages -----------------------------------------------------------------------------------

class Stub:
    """A 16-wide feature extractor (4x4 average pool of the gray image), for scoring."""
    id, preprocessing, pool_dim, network = "stub/16", "stub", 16, "stub"
    logits_note = "no logits: stub"

    def __call__(self, images):
        pool = F.adaptive_avg_pool2d(images.float().mean(1, keepdim=True), 4).flatten(1) / 255
        return {"pool": pool.numpy().astype(np.float32)}


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A tiny tokenizer, code map, transformer and samples, and a 16-wide reference."""
    from drr.metrics.reference import FORMAT, write_reference
    from drr.sampling.generate import generate
    from drr.transformer.train import train

    root = tmp_path_factory.mktemp("links")
    cfg = tiny_config(*SETTINGS, "tokenizer.encode.rows_per_shard=8")
    config = root / "config.yaml"
    save_config(cfg, config)
    tok, codes = make_tokenizer_and_codes(root / "tok", cfg)
    model = train(cfg, tok, codes, root / "transformers/t/checkpoint.pt")
    generate(cfg, tok, model, root / "samples")
    rng = np.random.default_rng(0)
    feats = rng.random((32, 16))
    meta = {"format": FORMAT, "kind": "imported", "reference_id": "test",
            "stats_extractor": "imported:0", "features_extractor": "imported:0", "source": "test"}
    write_reference(root / "reference.npz", feats.mean(0), np.cov(feats, rowvar=False), feats, meta)
    return {"root": root, "config": config, "tok": tok, "codes": codes, "model": model,
            "samples": root / "samples/samples.npz", "reference": root / "reference.npz"}


def generate_args(run, out):
    return ["--config", str(run["config"]), "--tokenizer", str(run["tok"]),
            "--transformer", str(run["model"]), "--out", str(out)]


def score_args(run, out):
    return ["--config", str(run["config"]), "--samples", str(run["samples"]),
            "--reference", str(run["reference"]), "--out", str(out)]


def encode_args(run, out):
    return ["--config", str(run["config"]), "--tokenizer", str(run["tok"]), "--split", "train",
            "--out", str(out)]


def train_args(run, out):
    return ["--config", str(run["config"]), "--tokenizer", str(run["tok"]),
            "--codes", str(run["codes"]), "--out", str(out)]


@pytest.mark.parametrize("stage, lock_name", [
    ("generate", ".out.samples.lock"), ("generate shard", ".out.shard-1.lock"),
    ("score", ".m.parquet.lock"), ("encode", ".codes.lock"), ("train", ".checkpoint.pt.lock")])
def test_a_stage_refuses_a_link_at_its_lock_file(run, tmp_path, victim, capsys, monkeypatch, stage,
                                                 lock_name):
    monkeypatch.setattr("drr.metrics.inception.load_inception", lambda *a, **k: Stub())
    monkeypatch.setattr("drr.data.build_dataset", lambda *a, **k: pytest.fail("work started"))
    link = victim.plant(tmp_path / lock_name)
    module, argv = {
        "generate": ("drr.sampling.generate", generate_args(run, tmp_path / "out")),
        "generate shard": ("drr.sampling.generate", generate_args(run, tmp_path / "out") + ["--shard", "1"]),
        "score": ("drr.metrics.score", score_args(run, tmp_path / "m.parquet")),
        "encode": ("drr.codes.encode", encode_args(run, tmp_path / "codes")),
        "train": ("drr.transformer.train", train_args(run, tmp_path / "checkpoint.pt")),
    }[stage]
    refused(module, argv, capsys, rf"{re.escape(str(link))}: is a symbolic link")
    assert victim.intact()


def test_generation_replaces_links_at_its_shards_samples_and_records(run, tmp_path, victim, capsys):
    out = tmp_path / "out"
    planted = [victim.plant(out / name) for name in (
        "shards/shard-00000.npz", "shards/shard-00001.npz", "samples.npz", "grid.png",
        "samples.json", "config.yaml")]
    code, err = run_main("drr.sampling.generate", generate_args(run, out), capsys)
    assert code == 0, err[-2000:]
    assert victim.intact()
    assert all(regular(p) for p in planted)
    with np.load(out / "samples.npz") as z, np.load(run["samples"]) as ref:
        np.testing.assert_array_equal(z["arr_0"], ref["arr_0"])


def test_scoring_replaces_a_link_at_its_rows(run, tmp_path, victim, capsys, monkeypatch):
    from drr.metrics.score import read_rows

    monkeypatch.setattr("drr.metrics.inception.load_inception", lambda *a, **k: Stub())
    for name in ("m.parquet", "m.jsonl"):
        out = victim.plant(tmp_path / name)
        code, err = run_main("drr.metrics.score", score_args(run, out), capsys)
        assert code == 0, err[-2000:]
        assert regular(out) and read_rows(out)[0]["n_samples"] == 8
    assert victim.intact()


def test_encoding_replaces_links_in_its_partial_folder(run, tmp_path, victim, capsys, monkeypatch):
    """Links at a finished shard, at the temporary name older drr used, and at _SUCCESS."""
    from drr.codes.store import CodeMap

    class Images(torch.utils.data.Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            g = torch.Generator().manual_seed(i)
            return {"image": torch.randint(0, 256, (3, 16, 16), generator=g, dtype=torch.uint8),
                    "index": i, "label": i % 3, "caption": ""}

        def description(self):
            return {"dataset": "synthetic", "num_images": 20}

    monkeypatch.setattr("drr.data.build_dataset", lambda *a, **k: Images())
    out = tmp_path / "codes"
    for name in ("part-00000.parquet", ".part-00001.parquet.tmp", "_SUCCESS"):
        victim.plant(tmp_path / "codes.partial" / name)
    code, err = run_main("drr.codes.encode", encode_args(run, out), capsys)
    assert code == 0, err[-2000:]
    assert victim.intact()
    assert sorted(p.name for p in out.iterdir()) == ["_SUCCESS", "part-00000.parquet",
                                                     "part-00001.parquet", "part-00002.parquet"]
    assert all(regular(p) for p in out.iterdir()) and len(CodeMap(out)) == 20


def test_a_link_in_place_of_the_partial_folder_is_refused(run, tmp_path, victim, capsys, monkeypatch):
    monkeypatch.setattr("drr.data.build_dataset", lambda *a, **k: list(range(4)))
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "codes.partial").symlink_to(tmp_path / "elsewhere")
    refused("drr.codes.encode", encode_args(run, tmp_path / "codes"), capsys,
            r"codes\.partial: is not a folder \(a link or a file\)")
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_training_replaces_links_at_its_checkpoint_and_config(run, tmp_path, victim, capsys):
    """Links at the checkpoint and the config are replaced; one at the state, which a resumed run
    reads, is read (and refused: the victim is no such file), never written."""
    out = tmp_path / "t/checkpoint.pt"
    planted = [victim.plant(out), victim.plant(out.parent / "config.yaml")]
    code, err = run_main("drr.transformer.train", train_args(run, out), capsys)
    assert code == 0, err[-2000:]
    assert all(regular(p) for p in planted)
    assert torch.load(out, weights_only=True)["kind"] == "drr-transformer"
    out = tmp_path / "s/checkpoint.pt"
    victim.plant(out.parent / "train-state.pt")
    refused("drr.transformer.train", train_args(run, out), capsys,
            r"s/train-state\.pt: not a readable training state")
    assert victim.intact()


def test_reports_and_references_replace_links(run, tmp_path, victim, capsys, monkeypatch):
    monkeypatch.chdir(REPO)
    spec = victim.plant(tmp_path / "results/reports/index.spec.json")
    code, err = run_main("drr.workflow.report_spec", ["--suite", "tiny", "--report", "index",
                                                      "--out", str(spec)], capsys)
    assert code == 0, err[-2000:]
    assert regular(spec)
    index = victim.plant(tmp_path / "reports/index.md")
    code, err = run_main("drr.reports.index", ["--spec", str(spec), "--out", str(index)], capsys)
    assert code == 0, err[-2000:]
    assert regular(index) and index.read_text().startswith("# drr reports")
    monkeypatch.setattr("drr.metrics.inception.load_inception", lambda *a, **k: Stub())
    src = tmp_path / "stats.npz"
    np.savez(src, mu=np.zeros(16), sigma=np.eye(16))
    argv = ["--config", str(run["config"]), "--import", str(src), "--cache-dir", str(tmp_path / "c")]
    ref = tmp_path / "reference.npz"  # a dangling link: replaced, its target never made
    ref.symlink_to(tmp_path / "made-through-the-link.npz")
    code, err = run_main("drr.metrics.reference", argv + ["--out", str(ref)], capsys)
    assert code == 0, err[-2000:]
    assert regular(ref) and json.loads(str(np.load(ref)["meta"]))["kind"] == "imported"
    assert not (tmp_path / "made-through-the-link.npz").exists()
    ref = victim.plant(tmp_path / "other.npz")  # an existing --out is read first: not a reference
    refused("drr.metrics.reference", argv + ["--out", str(ref)], capsys,
            r"other\.npz: existing --out reference exists but is not a usable drr reference")
    assert victim.intact()


def test_a_link_at_a_jobs_log_is_not_written_through(tmp_path, victim):
    """Snakemake removes a job's log before the job's shell redirects into it."""
    from workflow_fixtures import SNAKEMAKE, copy_workflow

    (tmp_path / "wf").mkdir()
    cwd = copy_workflow(tmp_path / "wf")
    tok = cwd / "results/tokenizers/tiny-fmnist-rq8x8x4/checkpoint.pt"
    tok.parent.mkdir(parents=True)
    tok.write_bytes(b"not a checkpoint: the job fails at once")
    log = victim.plant(cwd / "results/codes/tiny-fmnist-rq8x8x4/fashion-mnist/test.log")
    r = subprocess.run([*SNAKEMAKE, "--cores", "1", "results/codes/tiny-fmnist-rq8x8x4/fashion-mnist/test"],
                       cwd=cwd, capture_output=True, text=True, timeout=300,
                       env=dict(os.environ, PYTHONPATH=str(REPO)))
    assert r.returncode != 0  # the job fails on the bad tokenizer ...
    assert victim.intact()    # ... and its log went to a new file, not through the link
    assert regular(log) and "not a readable tokenizer checkpoint" in log.read_text()
