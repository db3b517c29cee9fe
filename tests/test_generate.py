"""Sample generation at scale (drr.sampling.generate), the speed measurement (drr.sampling.speed)
and inpainting (drr.sampling.inpaint) on a tiny trained transformer (4x4x2 codes, 3 classes): the
same samples whatever the batches and shards, bf16 against fp32, and the device a job asks for."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from transformer_fixtures import REPO, make_tokenizer_and_codes, tiny_config

from drr.core.config import save_config
from drr.core.errors import DrrError
from drr.sampling import generate as gen_mod
from drr.sampling import inpaint as inpaint_mod
from drr.sampling import speed as speed_mod
from drr.sampling.decode import DecodeSettings, sample_seeds

TRAIN = "transformer.train.steps=3"


def cfg_with(*settings):
    return tiny_config(TRAIN, *settings)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the 2-core machine is shared, and two spinning OpenMP threads on a busy
    core make every forward 100x slower."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Tokenizer, code map and a transformer trained for 3 steps; the config as a YAML file."""
    from drr.transformer.train import train
    folder = tmp_path_factory.mktemp("gen")
    cfg = cfg_with()
    tok, codes = make_tokenizer_and_codes(folder, cfg)
    model = train(cfg, tok, codes, folder / "transformer.pt")
    config = folder / "config.yaml"
    save_config(cfg, config)
    return {"folder": folder, "tok": tok, "codes": codes, "model": model, "config": config}


def run(setup, out, *settings, **kw):
    cfg = cfg_with("generation.num_samples=8", *settings)
    return gen_mod.generate(cfg, setup["tok"], setup["model"], out, **kw)


def cli_args(setup, out, *settings):
    args = ["--config", str(setup["config"])]
    for s in settings:
        args += ["--set", s]
    return args + ["--tokenizer", str(setup["tok"]), "--transformer", str(setup["model"]),
                   "--out", str(out)]


@pytest.fixture(scope="module")
def runs(setup, tmp_path_factory):
    """The same 8 samples at batch sizes 1, 3, 8 (one shard) and at batch 3 in 2 shards."""
    folder = tmp_path_factory.mktemp("runs")
    outs = {}
    for bs, shard in [(1, 8), (3, 8), (8, 8), (3, 4)]:
        out = folder / f"b{bs}-s{shard}"
        run(setup, out, f"generation.batch_size={bs}", f"generation.shard_size={shard}",
            "generation.save_drafts=true", "generation.grid_samples=6")
        outs[bs, shard] = out
    return outs


def load(out):
    with np.load(out / "samples.npz") as z:
        return {k: z[k] for k in z.files}


def test_samples_do_not_depend_on_batch_size_or_shards(runs):
    ref = load(runs[1, 8])
    for key, out in runs.items():
        got = load(out)
        for k in ("codes", "arr_0", "drafts", "labels", "index"):
            assert np.array_equal(got[k], ref[k]), (key, k)
    assert len({r.tobytes() for r in ref["arr_0"]}) == 8  # different seeds, different samples


def test_merged_npz_is_in_the_evaluator_format(runs):
    out = runs[3, 4]
    z = load(out)
    assert set(z) == {"arr_0", "index", "labels", "codes", "drafts"}
    assert z["arr_0"].dtype == np.uint8 and z["arr_0"].shape == (8, 16, 16, 3)
    assert z["drafts"].dtype == np.uint8 and z["drafts"].shape == (8, 16, 16, 3)
    assert z["labels"].tolist() == [i % 3 for i in range(8)]
    assert z["index"].tolist() == list(range(8))
    assert z["codes"].dtype == np.int16 and z["codes"].shape == (8, 4, 4, 2)
    assert not np.array_equal(z["drafts"], z["arr_0"])  # the revise phase changed something
    assert sorted(p.name for p in (out / "shards").iterdir()) == ["shard-00000.npz",
                                                                  "shard-00001.npz"]
    from PIL import Image
    for name in ("grid.png", "drafts-grid.png"):
        with Image.open(out / name) as im:
            assert im.size == (3 * 18 + 2, 2 * 18 + 2)  # 6 samples, 3 a row, 2-px padding
    rec = json.loads((out / "samples.json").read_text())
    assert rec["num_samples"] == 8 and rec["shards"] == 2 and rec["seed"] == 0
    assert len(rec["transformer_sha256"]) == 64 and len(rec["tokenizer_sha256"]) == 64
    assert rec["decode_settings"]["t_draft"] == 8 and rec["decode_settings"]["revise"]["guidance"] == 1.8
    assert rec["wall_s"] > 0 and rec["devices"] and rec["config_hash"]
    # an unconditional layout without drafts has no labels / drafts keys
    assert "captions" not in z


def test_killed_generation_resumes_to_the_uninterrupted_samples(setup, runs, tmp_path):
    settings = ["generation.num_samples=60", "generation.shard_size=2", "generation.batch_size=2"]
    ref = tmp_path / "ref"
    gen_mod.generate(cfg_with(*settings), setup["tok"], setup["model"], ref)

    out = tmp_path / "killed"
    env = dict(os.environ, OMP_NUM_THREADS="1")
    proc = subprocess.Popen([sys.executable, "-m", "drr.sampling.generate",
                             *cli_args(setup, out, *settings)], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    first = out / "shards" / "shard-00000.npz"
    t0 = time.monotonic()
    while not first.exists():
        if proc.poll() is not None:
            pytest.fail(f"generation ended before a shard appeared:\n{proc.stderr.read()}")
        if time.monotonic() - t0 > 60:
            proc.kill()
            pytest.fail("no shard after 60 s")
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    finished = sorted((out / "shards").glob("shard-*.npz"))
    assert 1 <= len(finished) < 30, "generation finished before it could be killed"
    assert not (out / "samples.npz").exists()
    for p in finished:  # every file with a shard's name is complete
        assert gen_mod.read_shard_meta(p) is not None, p
    mtimes = {p: p.stat().st_mtime_ns for p in finished}
    # A damaged file under a final name (not something drr writes) is remade, a temporary is ignored.
    damaged = gen_mod.shard_path(out, 29)
    damaged.write_bytes(first.read_bytes()[:100])
    (out / "shards" / ".shard-00028.npz.abc.tmp").write_bytes(b"half")

    gen_mod.generate(cfg_with(*settings), setup["tok"], setup["model"], out)
    assert {p: p.stat().st_mtime_ns for p in finished} == mtimes  # finished shards were kept
    a, b = load(ref), load(out)
    assert a.keys() == b.keys()
    for k in a:
        assert np.array_equal(a[k], b[k]), k
    assert not list((out / "shards").glob(".*.tmp"))


def test_shard_jobs_then_merge(setup, runs, tmp_path, capsys):
    out = tmp_path / "jobs"
    settings = ["generation.num_samples=8", "generation.shard_size=4", "generation.batch_size=4",
                "generation.save_drafts=true", "generation.grid_samples=6"]
    gen_mod.main(cli_args(setup, out, *settings) + ["--shard", "1"])
    assert [p.name for p in (out / "shards").glob("*.npz")] == ["shard-00001.npz"]
    assert not (out / "samples.npz").exists()
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        gen_mod.main(cli_args(setup, out, *settings) + ["--merge-only"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "shard-00000.npz: 1 of 2 shards are missing" in err[0]
    gen_mod.main(cli_args(setup, out, *settings) + ["--shard", "0"])
    gen_mod.main(cli_args(setup, out, *settings) + ["--merge-only"])
    a, b = load(runs[1, 8]), load(out)
    for k in a:
        assert np.array_equal(a[k], b[k]), k


def test_shard_of_another_config_is_refused(setup, runs, tmp_path, capsys):
    out = tmp_path / "other"
    shutil.copytree(runs[3, 4], out)
    settings = ["generation.num_samples=8", "generation.shard_size=4", "generation.save_drafts=true"]
    # the batch size does not change a shard's samples: the shards are kept
    gen_mod.main(cli_args(setup, out, *settings, "generation.batch_size=2"))
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        gen_mod.main(cli_args(setup, out, *settings, "sampling.revise.temperature=0.7"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(out / "shards" / "shard-00000.npz") in err[0] and "'config_hash'" in err[0]
    assert "sampling.revise.temperature is 0.8 there, 0.7 here" in err[0]


def test_wrong_tokenizer_is_refused(setup, tmp_path, capsys):
    other, _ = make_tokenizer_and_codes(tmp_path, cfg_with(), rows=4, seed=1)
    with pytest.raises(SystemExit) as e:
        gen_mod.main(["--config", str(setup["config"]), "--tokenizer", str(other),
                      "--transformer", str(setup["model"]), "--out", str(tmp_path / "o")])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert str(other) in err[0] and str(setup["model"]) in err[0] and "'tokenizer_sha256'" in err[0]
    assert not (tmp_path / "o").exists()


def test_speed_cli_times_draft_revise_and_decode(setup, tmp_path, capsys):
    out = tmp_path / "speed.json"
    speed_mod.main(["--config", str(setup["config"]), "--set", "generation.speed_batch_size=4",
                    "--set", "generation.speed_batches=2", "--tokenizer", str(setup["tok"]),
                    "--transformer", str(setup["model"]), "--json", str(out)])
    rec = json.loads(out.read_text())
    for phase in ("draft", "revise", "decode"):
        assert rec[f"s_per_sample_{phase}"] > 0
        assert len(rec["batch_seconds"][phase]) == 2
    assert rec["s_per_sample"] == pytest.approx(
        sum(rec[f"s_per_sample_{p}"] for p in ("draft", "revise", "decode")))
    assert rec["batch_size"] == 4 and rec["timed_samples"] == 8 and rec["warmup_batches"] == 1
    assert rec["torch"] == torch.__version__ and rec["device"]
    assert rec["decode_settings"]["revise_iterations"] == 2
    assert rec["precision"] == "fp32" and rec["tf32"] is False  # the config's; TF32 only on CUDA
    assert capsys.readouterr().err.strip().splitlines()[-1].endswith(f"in fp32; wrote {out}")


def test_speed_names_the_precision_it_ran_in(setup, tmp_path, capsys):
    out = tmp_path / "speed-bf16.json"
    speed_mod.main(["--config", str(setup["config"]), "--set", "generation.speed_batch_size=2",
                    "--set", "generation.speed_batches=1", "--set", "sampling.precision=bf16",
                    "--tokenizer", str(setup["tok"]), "--transformer", str(setup["model"]),
                    "--json", str(out)])
    assert json.loads(out.read_text())["precision"] == "bf16"
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert " in bf16; wrote " in line and "s/sample (draft " in line
    speed_mod.main(["--config", str(setup["config"]), "--set", "generation.speed_batch_size=2",
                    "--set", "generation.speed_batches=1", "--precision", "bf16",
                    "--tokenizer", str(setup["tok"]), "--transformer", str(setup["model"]),
                    "--json", str(out)])
    assert json.loads(out.read_text())["precision"] == "bf16"


def test_speed_times_the_generation_loop_through_its_phase_hook(setup, monkeypatch):
    """The speed measurement samples with the sampler generation uses (decode.py's
    draft_and_revise, not a copy of the loop) and times the phases where that loop's on_phase
    hook reports their ends."""
    from drr.sampling import sampler
    real, hooks = sampler.draft_and_revise, []

    def recording(*args, on_phase=None, **kw):
        phases = []
        hooks.append(phases)
        return real(*args, on_phase=lambda p: (phases.append(p), on_phase(p)), **kw)

    monkeypatch.setattr(sampler, "draft_and_revise", recording)
    rec = speed_mod.measure(cfg_with("generation.speed_batch_size=3", "generation.speed_batches=2"),
                            setup["tok"], setup["model"])
    assert hooks == [["draft", "revise"]] * 3  # the warm-up batch and 2 timed ones
    assert {p: len(t) for p, t in rec["batch_seconds"].items()} == {"draft": 2, "revise": 2,
                                                                    "decode": 2}


def test_clock_times_named_phases_in_order():
    clock = speed_mod.Clock(torch.device("cpu"))
    time.sleep(0.02)
    clock.mark("draft")
    clock.mark("revise")
    time.sleep(0.01)
    clock.mark("decode")
    t = clock.seconds()
    assert list(t) == ["draft", "revise", "decode"]
    assert t["draft"] >= 0.02 and 0 <= t["revise"] < 0.01 and t["decode"] >= 0.01


def test_bf16_and_fp32_samples_agree_on_most_code_maps(setup, tmp_path):
    """sampling.precision bf16 (autocast; here on the CPU) against fp32: the same model, seeds and
    conditions, 64 samples. Measured (2026-12-07, x86-64, torch 2.14.1): 60 of the 64 code maps
    (94%) and 99.7% of the codes identical; a flipped code changes the context of the later steps,
    so a difference takes the rest of its map along. The floors leave room for another CPU's bf16
    kernels; the last assert shows that bf16 ran at all."""
    settings = ["generation.num_samples=64", "generation.batch_size=16", "generation.shard_size=64"]
    run(setup, tmp_path / "fp32", *settings)
    run(setup, tmp_path / "bf16", *settings, "sampling.precision=bf16")
    fp32, bf16 = load(tmp_path / "fp32"), load(tmp_path / "bf16")
    same = (fp32["codes"] == bf16["codes"]).reshape(64, -1)
    assert same.all(1).mean() >= 0.85 and same.mean() >= 0.99
    assert not same.all()
    rec = json.loads((tmp_path / "bf16" / "samples.json").read_text())
    assert rec["precision"] == "bf16"
    assert "precision: bf16" in (tmp_path / "bf16" / "config.yaml").read_text()


def test_shards_of_another_precision_are_refused(setup, tmp_path, capsys):
    out = tmp_path / "mixed"
    gen_mod.main(cli_args(setup, out, "generation.num_samples=4") + ["--precision", "bf16"])
    capsys.readouterr()
    with pytest.raises(SystemExit) as e:
        gen_mod.main(cli_args(setup, out, "generation.num_samples=4"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "'config_hash'" in err[0]
    assert "sampling.precision is 'bf16' there, 'fp32' here" in err[0]


def test_a_gpu_job_without_cuda_stops_before_writing(setup, tmp_path, capsys):
    """`device: cuda` (the paper configs) on a machine where torch sees no GPU: one line naming the
    key, the driver the installed torch needs and nvidia-smi; exit status 2, nothing written. The
    merge is a CPU job: it runs anyway."""
    if torch.cuda.is_available():
        pytest.skip("torch sees a GPU here")
    out = tmp_path / "gpu"
    with pytest.raises(SystemExit) as e:
        gen_mod.main(cli_args(setup, out, "generation.num_samples=4", "device=cuda"))
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: device: 'cuda' asks for a GPU")
    need = {"13": ">= 580", "12": ">= 525"}.get((torch.version.cuda or "").split(".")[0], "")
    assert f"CUDA {torch.version.cuda}" in err[0] and need in err[0] and "`nvidia-smi`" in err[0]
    assert not out.exists()
    gen_mod.main(cli_args(setup, out, "generation.num_samples=4") + ["--device", "cpu", "--shard", "0"])
    gen_mod.main(cli_args(setup, out, "generation.num_samples=4", "device=cuda") + ["--merge-only"])
    assert (out / "samples.npz").exists()


def test_inpainting_keeps_the_codes_outside_the_region(setup):
    from drr.codes.store import CodeMap
    from drr.transformer.io import load_transformer
    model, _, _ = load_transformer(setup["model"])
    counts = {"bottom": 8, "center": 4, "outside": 12, "random-half": 8}
    regions = {k: inpaint_mod.region_mask(k, 4, 4, inpaint_mod.mask_generator(0, 1))
               for k in counts}
    assert {k: int(r.sum()) for k, r in regions.items()} == counts
    assert torch.equal(regions["center"], ~regions["outside"])
    assert regions["bottom"].reshape(4, 4)[2:].all() and not regions["bottom"].reshape(4, 4)[:2].any()
    codes = torch.from_numpy(CodeMap(setup["codes"]).codes[:4].astype(np.int64)).reshape(4, 16, 2)
    codes = codes.repeat(4, 1, 1)
    region = torch.stack([regions[k] for k in counts for _ in range(4)])
    settings = DecodeSettings.from_config(cfg_with()["sampling"])
    out = inpaint_mod.inpaint(model, codes, region, torch.zeros(16, 1, dtype=torch.long),
                              settings, sample_seeds(0, range(16)))
    assert torch.equal(out[~region], codes[~region])
    assert (out[region] != codes[region]).any()


def test_inpaint_cli_writes_the_figure(setup, tmp_path):
    png = tmp_path / "inpaint.png"
    inpaint_mod.main(["--config", str(setup["config"]), "--tokenizer", str(setup["tok"]),
                      "--transformer", str(setup["model"]), "--codes", str(setup["codes"]),
                      "--out", str(png), "--rows", "0", "1", "--samples", "2",
                      "--class-override", "2"])
    from PIL import Image
    with Image.open(png) as im:  # 2 rows x 4 masks lines of original, masked, 2 completions
        assert im.size == (4 * 18 + 2, 8 * 18 + 2)
    rec = json.loads(png.with_suffix(".json").read_text())
    assert rec["conditions"] == [2, 2] and len(rec["lines"]) == 8
    assert [line["mask"] for line in rec["lines"][:4]] == list(inpaint_mod.MASKS)
    with pytest.raises(DrrError, match="--class-override 5"):
        inpaint_mod.run(cfg_with(), setup["tok"], setup["model"], setup["codes"], png, [0],
                        class_override=5)


def test_text_model_samples_eval_captions(tmp_path):
    from drr.text import CaptionBPE
    from drr.transformer.train import train
    captions = ["a red dress", "a blue shoe", "a green bag", "two red shoes", "a bag", "a dress"]
    bpe = CaptionBPE.train(captions * 3, vocab_size=300)
    bpe.save(tmp_path / "bpe.json")
    settings = ["transformer.model.cond.type=text", "transformer.model.cond.vocab_size=300",
                "transformer.model.cond.length=6", "generation.conditions=eval_captions",
                "generation.num_samples=8", "generation.batch_size=4"]
    cfg = cfg_with(*settings)
    tok, codes = make_tokenizer_and_codes(tmp_path, cfg, rows=6, captions=captions)
    model = train(cfg, tok, codes, tmp_path / "transformer.pt", caption_bpe=tmp_path / "bpe.json")
    with pytest.raises(DrrError, match="--text-tokenizer"):
        gen_mod.generate(cfg, tok, model, tmp_path / "out")
    gen_mod.generate(cfg, tok, model, tmp_path / "out", caption_bpe=tmp_path / "bpe.json",
                     captions=codes)
    z = load(tmp_path / "out")
    assert set(z) == {"arr_0", "index", "captions", "codes"}
    assert z["captions"].tolist() == [captions[i % 6] for i in range(8)]
    rec = json.loads((tmp_path / "out" / "samples.json").read_text())
    assert rec["conditions"]["num_captions"] == 6
    with pytest.raises(DrrError, match="generation.conditions"):
        gen_mod.generate(cfg_with(*settings[:3], "generation.conditions=balanced"), tok, model,
                         tmp_path / "out2")
