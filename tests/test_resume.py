"""Kill a writer at random points, rerun the plain command, get the bytes of an uninterrupted run.

Each writer (encoding a code map, generating sample shards and merging them) runs as its CLI
`main` in a forked child (no interpreter start-up, so many kills fit in a test), and the child is
SIGKILLed after a random delay (seeded) between 0 and 1.2 times an uninterrupted run: nothing of
the child's own clean-up runs, as with a kill -9 or a lost node. Kills accumulate on one output
folder (each rerun resumes from what the previous killed one left) until at least KILLS of them
landed while the writer ran; then the plain command is run to the end and its output is compared
byte for byte with a reference run. A damaged shard in a code map's .partial/ folder (a crash of
the machine after the rename, before the data reached the disk) is removed and made again.
"""

from __future__ import annotations

import os
import random
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path

import numpy as np
import pytest
import torch
from transformer_fixtures import make_tokenizer_and_codes, tiny_config

from drr.core.config import save_config

KILLS = 20        # kills per writer that land while it runs
MAX_ROUNDS = 80   # runs per writer at most (a run that ends before its kill is not a kill)
SEED = 20221128

pytestmark = pytest.mark.usefixtures("one_thread")


def run_child(main, argv: list[str], kill_after: float | None = None, timeout: float = 60.0):
    """Run ``main(argv)`` in a forked child; SIGKILL it after `kill_after` seconds (None: never).
    Returns (killed, exit status, seconds)."""
    sys.stdout.flush()
    sys.stderr.flush()
    t0 = time.monotonic()
    pid = os.fork()
    if pid == 0:  # the child: run the command, never return into pytest
        code = 0
        try:
            torch.set_num_threads(1)
            sys.stderr = open(os.devnull, "w")  # progress lines
            main(argv)
        except SystemExit as e:
            code = e.code if isinstance(e.code, int) else 1
        except BaseException:
            traceback.print_exc()
            code = 1
        os._exit(code)
    deadline = t0 + (timeout if kill_after is None else kill_after)
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return False, os.waitstatus_to_exitcode(status), time.monotonic() - t0
        if time.monotonic() >= deadline:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            if kill_after is None:
                raise AssertionError(f"{main.__module__}: no end after {timeout} s")
            return True, os.waitstatus_to_exitcode(status), time.monotonic() - t0
        time.sleep(0.002)


def files_of(folder: Path) -> dict[str, bytes]:
    """Every regular file under `folder` (relative name -> bytes)."""
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*"))
            if p.is_file()}


def kill_until(main, argv, out_of_run, reference, rng, clean, progress=lambda: 0):
    """Kill runs of `main(argv)` at random points until KILLS kills landed (a run that finished
    is checked against `reference` and its output removed with `clean`); then the plain run.
    Returns the set of `progress()` values seen after the kills (how far the killed runs got)."""
    _, code, full = run_child(main, argv)
    assert code == 0
    assert out_of_run() == reference
    clean()
    kills, seen = 0, set()
    for _ in range(MAX_ROUNDS):
        killed, code, _ = run_child(main, argv, kill_after=rng.uniform(0, 1.2 * full))
        kills += killed
        seen.add(progress())
        assert killed or code == 0, "a run after kills failed"
        if out_of_run() is not None:  # it ended, or was killed once its output was complete
            assert out_of_run() == reference, "a run after kills made other bytes"
            clean()
        elif kills >= KILLS:
            break
    assert kills >= KILLS, f"only {kills} kills landed in {MAX_ROUNDS} runs"
    _, code, _ = run_child(main, argv)
    assert code == 0, "the plain rerun after the kills failed"
    assert out_of_run() == reference, "the rerun after the kills made other bytes"
    return seen


# --- encoding -----------------------------------------------------------------------------------

class Images(torch.utils.data.Dataset):
    """A synthetic split (stands in for the dataset files: the test needs none)."""

    def __init__(self, n: int, resolution: int):
        rng = np.random.default_rng(0)
        self.images = rng.integers(0, 256, (n, 3, resolution, resolution), dtype=np.uint8)
        self.labels = rng.integers(0, 3, n)
        self.resolution = resolution

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return {"image": torch.from_numpy(self.images[i]), "index": i,
                "label": int(self.labels[i]), "caption": ""}

    def description(self):
        return {"dataset": "synthetic", "num_images": len(self), "resolution": self.resolution}


@pytest.fixture(scope="module")
def encoding(tmp_path_factory):
    root = tmp_path_factory.mktemp("encode")
    cfg = tiny_config("tokenizer.encode.rows_per_shard=8", "tokenizer.encode.batch_size=4")
    save_config(cfg, root / "config.yaml")
    tok, _ = make_tokenizer_and_codes(root / "tok", cfg, rows=8)
    return root, cfg, tok


def test_encoding_killed_at_random_points_resumes_to_the_same_bytes(encoding, tmp_path, monkeypatch):
    from drr.codes.encode import main

    root, cfg, tok = encoding
    monkeypatch.setattr("drr.data.build_dataset", lambda data, split, **k: Images(200, 16))
    ref_out, out = tmp_path / "ref/codes", tmp_path / "run/codes"
    argv = ["--config", str(root / "config.yaml"), "--tokenizer", str(tok), "--split", "train"]
    main(argv + ["--out", str(ref_out)])  # in this process: the children fork with its imports
    reference = files_of(ref_out)
    assert len([n for n in reference if n.startswith("part-")]) == 25  # 200 rows in shards of 8

    def clean():
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_name("codes.partial"), ignore_errors=True)

    partial = out.with_name("codes.partial")
    seen = kill_until(main, argv + ["--out", str(out)],
                      lambda: files_of(out) if out.exists() else None, reference,
                      random.Random(SEED), clean, lambda: len(list(partial.glob("part-*"))))
    assert len(seen) >= 5, f"the kills landed at too few points: shards done {sorted(seen)}"
    assert not partial.exists()


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "another map's"])
def test_a_damaged_partial_shard_is_made_again(encoding, tmp_path, monkeypatch, damage, capsys):
    """A shard in .partial/ that does not read back whole, or belongs to another map, is removed
    with every shard after it, and the rerun ends with the bytes of an uninterrupted run."""
    from drr.codes import encode

    root, cfg, tok = encoding
    monkeypatch.setattr("drr.data.build_dataset", lambda data, split, **k: Images(40, 16))
    argv = ["--config", str(root / "config.yaml"), "--tokenizer", str(tok), "--split", "train"]
    encode.main(argv + ["--out", str(tmp_path / "ref")])
    reference = files_of(tmp_path / "ref")
    partial = tmp_path / "run.partial"
    shutil.copytree(tmp_path / "ref", partial)
    (partial / "_SUCCESS").unlink()
    (partial / ".part-00004.parquet.abcd.tmp").write_bytes(b"left by a killed writer")
    victim = partial / "part-00002.parquet"
    data = victim.read_bytes()
    if damage == "truncated":
        victim.write_bytes(data[: len(data) // 2])
    elif damage == "random bytes":
        victim.write_bytes(np.random.default_rng(1).bytes(len(data)))
    elif damage == "empty":
        victim.write_bytes(b"")
    else:  # a shard another tokenizer made: same columns, other metadata
        import pyarrow.parquet as pq
        t = pq.read_table(victim)
        meta = dict(t.schema.metadata)
        meta[b"drr"] = meta[b"drr"].replace(b'"tokenizer_sha256": "', b'"tokenizer_sha256": "0')
        pq.write_table(t.replace_schema_metadata(meta), victim)
    capsys.readouterr()
    encode.main(argv + ["--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert "part-00002.parquet: " in err and "removed with the 2 shard(s) after it" in err
    assert "resuming after 16 rows" in err
    assert files_of(tmp_path / "run") == reference


# --- generation -----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generation(tmp_path_factory):
    from drr.transformer.train import train

    root = tmp_path_factory.mktemp("generate")
    cfg = tiny_config("transformer.train.steps=3", "generation.num_samples=24",
                      "generation.batch_size=4", "generation.shard_size=4")
    save_config(cfg, root / "config.yaml")
    tok, codes = make_tokenizer_and_codes(root / "tok", cfg)
    model = train(cfg, tok, codes, root / "transformer/checkpoint.pt")
    return root, tok, model


def samples_of(out: Path) -> dict | None:
    """What a generation run must reproduce exactly: samples.npz and grid.png byte for byte, and
    every shard's arrays and metadata (its wall time and device aside)."""
    import json

    if not (out / "samples.json").exists():
        return None
    got = {name: (out / name).read_bytes() for name in ("samples.npz", "grid.png")}
    for p in sorted((out / "shards").iterdir()):
        with np.load(p) as z:
            meta = json.loads(str(z["meta"]))
            for k in ("wall_s", "device"):
                meta.pop(k)
            got[p.name] = ({k: z[k].tobytes() for k in z.files if k != "meta"}, meta)
    return got


def test_generation_killed_at_random_points_resumes_to_the_same_bytes(generation, tmp_path):
    from drr.sampling.generate import main

    root, tok, model = generation
    argv = ["--config", str(root / "config.yaml"), "--tokenizer", str(tok),
            "--transformer", str(model)]
    main(argv + ["--out", str(tmp_path / "ref")])  # in this process: the children fork with its imports
    reference = samples_of(tmp_path / "ref")
    assert len([k for k in reference if k.startswith("shard-")]) == 6
    out = tmp_path / "run"
    seen = kill_until(main, argv + ["--out", str(out)], lambda: samples_of(out), reference,
                      random.Random(SEED + 1), lambda: shutil.rmtree(out, ignore_errors=True),
                      lambda: len(list(out.glob("shards/shard-*.npz"))))
    assert len(seen) >= 4, f"the kills landed at too few points: shards done {sorted(seen)}"
    assert not [p for p in out.rglob("*.tmp")], "temporaries were left behind"
