"""The caption BPE (drr.text): encoding contract, determinism, save/load, CLI errors."""

import json
import re
import subprocess
import sys
import tarfile
import unicodedata

import numpy as np
import pytest

from drr.codes.store import CodeMapWriter
from drr.core.errors import DrrError
from drr.core.files import sha256_file
from drr.text import CaptionBPE
from drr.text.train_bpe import main

WORDS = ("a man woman dog cat sitting riding standing on the with red blue small large bench "
         "street table next to of in front kitchen plate pizza bus train").split()


def synthetic_captions(n: int = 400, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=rng.integers(3, 14))).capitalize() + "."
            for _ in range(n)]


@pytest.fixture(scope="module")
def tok() -> CaptionBPE:
    return CaptionBPE.train(synthetic_captions(), vocab_size=300)


def normalised(text: str) -> str:
    return unicodedata.normalize("NFKC", text).lower().strip()


def test_encode_shape_dtype_padding_truncation(tok):
    ids = tok.encode(["A dog.", "", " ".join(["pizza"] * 50)], length=32)
    assert ids.shape == (3, 32) and ids.dtype == np.int64
    assert (ids >= 0).all() and (ids < tok.vocab_size).all()
    n_dog = int((ids[0] != CaptionBPE.PAD_ID).sum())
    assert 0 < n_dog < 32 and (ids[0, n_dog:] == CaptionBPE.PAD_ID).all()  # right-padded
    assert (ids[1] == CaptionBPE.PAD_ID).all()
    assert (ids[2] != CaptionBPE.PAD_ID).all()  # truncated to exactly 32 tokens
    np.testing.assert_array_equal(tok.encode(["A dog."], length=4)[0], ids[0, :4])
    assert tok.encode([], length=32).shape == (0, 32)
    with pytest.raises(TypeError):
        tok.encode("a dog")


def test_vocab_is_learned_and_compact(tok):
    assert tok.vocab_size == 300 and CaptionBPE.PAD_ID == 0  # stopped at the size asked for
    # Asked for more than the corpus has pairs for: training stops when every word is one token.
    full = CaptionBPE.train(synthetic_captions(), vocab_size=1000)
    assert 300 < full.vocab_size < 1000
    assert (full.encode(["a man riding the bus"])[0] != CaptionBPE.PAD_ID).sum() == 5


def test_round_trip(tok):
    for text in ["a man sitting on the bench next to a red bus.", "a dog", "the kitchen table"]:
        assert tok.decode(tok.encode([text], length=64)[0]) == text
    # Out-of-vocabulary and non-ASCII text still round-trips, as its normalised form (bytes).
    for text in ["  A Zebra, eating ＦＵＬＬ-width café crème 🐶 ", "Ünïcødé\tTabs"]:
        assert tok.decode(tok.encode([text], length=64)[0]) == normalised(text)
    assert tok.decode(np.zeros(8, np.int64)) == ""
    with pytest.raises(ValueError, match="one row"):
        tok.decode(np.zeros((2, 8), np.int64))


def test_training_is_deterministic(tok):
    again = CaptionBPE.train(synthetic_captions(), vocab_size=300)
    assert again._json() == tok._json() and again.sha256() == tok.sha256()
    other = CaptionBPE.train(synthetic_captions(seed=1), vocab_size=300)
    assert other.sha256() != tok.sha256()


def test_small_corpus_reports_real_vocab_size_and_check_vocab():
    tok = CaptionBPE.train(["a dog", "a cat", "a dog"], vocab_size=16384)
    assert 257 <= tok.vocab_size < 300
    tok.check_vocab(16384, "c.yaml: key 'text_vocab_size'")
    tok.check_vocab(tok.vocab_size, "c.yaml: key 'text_vocab_size'")
    with pytest.raises(DrrError, match=r"^c\.yaml: key 'text_vocab_size': text vocabulary size "
                                       r"100 is smaller than the tokenizer's \d+ tokens"):
        tok.check_vocab(100, "c.yaml: key 'text_vocab_size'")
    with pytest.raises(DrrError, match="vocab_size 100"):
        CaptionBPE.train(["a dog"], vocab_size=100)


def test_save_load_round_trip(tok, tmp_path):
    path = tmp_path / "sub" / "bpe.json"
    tok.save(path)
    assert [p.name for p in path.parent.iterdir()] == ["bpe.json"]  # no temporary left behind
    assert sha256_file(path) == tok.sha256()
    loaded = CaptionBPE.load(path)
    assert loaded.sha256() == tok.sha256() and loaded.vocab_size == tok.vocab_size
    caps = synthetic_captions(50, seed=2)
    np.testing.assert_array_equal(loaded.encode(caps), tok.encode(caps))


def test_load_refuses_missing_and_garbage(tok, tmp_path):
    with pytest.raises(DrrError, match=f"^{re.escape(str(tmp_path / 'none.json'))}: no such file"):
        CaptionBPE.load(tmp_path / "none.json")
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json\n at all")
    with pytest.raises(DrrError, match=f"^{re.escape(str(garbage))}: not a tokenizers JSON") as e:
        CaptionBPE.load(garbage)
    assert "\n" not in str(e.value)
    # A valid tokenizers file whose [PAD] is not id 0 is not ours: swap ids 0 and 5.
    other = json.loads(tok._json())
    vocab = other["model"]["vocab"]
    fifth = next(k for k, v in vocab.items() if v == 5)
    vocab["[PAD]"], vocab[fifth] = 5, 0
    other["added_tokens"][0]["id"] = 5
    moved = tmp_path / "moved.json"
    moved.write_text(json.dumps(other))
    with pytest.raises(DrrError, match=f"^{re.escape(str(moved))}: token '\\[PAD\\]' has id 5"):
        CaptionBPE.load(moved)


def write_code_map(folder, captions: list[str]):
    n = len(captions)
    meta = {"code_shape": [1, 1, 1], "codebook_size": 4, "tokenizer": "t",
            "tokenizer_sha256": "a" * 64, "dataset": "cc3m", "split": "train", "num_rows": n}
    w = CodeMapWriter(folder, meta, rows_per_shard=128)
    w.write(np.arange(n), np.zeros((n, 1, 1, 1), int), caption=captions)
    return w.finish()


def test_cli_trains_and_writes(tmp_path):
    codes = write_code_map(tmp_path / "codes", synthetic_captions(300) + [""] * 5)
    out = tmp_path / "text" / "bpe.json"
    r = subprocess.run([sys.executable, "-m", "drr.text.train_bpe", "--codes", str(codes),
                        "--vocab-size", "300", "--out", str(out)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "read 305 captions" in r.stderr and "5 empty" in r.stderr
    assert "300 tokens (asked for 300" in r.stderr and f"wrote {out}" in r.stderr
    tok = CaptionBPE.load(out)
    assert tok.vocab_size == 300 and tok.sha256() in r.stderr


def test_cli_refuses_code_map_without_captions(tmp_path, capsys):
    codes = write_code_map(tmp_path / "codes", ["", " ", ""])
    out = tmp_path / "bpe.json"
    with pytest.raises(SystemExit) as e:
        main(["--codes", str(codes), "--out", str(out)])
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {codes}: field 'caption' is empty")
    assert not out.exists()
    with pytest.raises(SystemExit) as e:  # checked before the code map is read
        main(["--codes", str(tmp_path / "absent"), "--vocab-size", "100", "--out", str(out)])
    assert e.value.code == 2
    assert capsys.readouterr().err == ("error: --vocab-size 100: a byte-level BPE starts with 257 "
                                       "tokens (256 bytes and [PAD]); ask for more\n")


def test_coco_captions(shared_data, tmp_path):
    """Trained on COCO-mini's train captions, held-out val captions round-trip and mostly fit in
    the paper's 32 tokens."""
    archive = shared_data / "coco-mini.tar.gz"
    if not archive.exists():
        pytest.skip(f"{archive} is absent")
    with tarfile.open(archive) as tf:
        tf.extractall(tmp_path, members=[m for m in tf.getmembers()
                                         if m.name.startswith("./annotations/")], filter="data")
    captions = {split: [a["caption"] for a in json.loads(
        (tmp_path / "annotations" / f"captions_{split}2017.json").read_text())["annotations"]]
        for split in ("train", "val")}
    tok = CaptionBPE.train(captions["train"], vocab_size=1024)
    val = captions["val"]
    ids = tok.encode(val, length=64)
    assert [tok.decode(row) for row in ids] == [normalised(c) for c in val]
    lengths = (ids != CaptionBPE.PAD_ID).sum(1)
    assert np.mean(lengths <= 32) > 0.95, np.percentile(lengths, [50, 95, 100])
