"""FID against training steps (drr.sampling.steps): which checkpoints it reads, and the paired
differences to the final checkpoint, on small arrays with known answers."""

import numpy as np
import pytest
import torch
from transformer_fixtures import tiny_config

from drr.core.errors import DrrError
from drr.metrics.intervals import basic_interval
from drr.sampling import steps as steps_mod


def fake_checkpoint(path, cfg, trained_steps):
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"config": cfg, "provenance": {"trained_steps": trained_steps}}, path)
    return path


def test_checkpoints_are_the_run_s_snapshots_then_the_final_one(tmp_path):
    cfg = tiny_config("transformer.train.steps=30", "transformer.train.snapshot_every=10")
    final = fake_checkpoint(tmp_path / "run" / "checkpoint.pt", cfg, 30)
    with pytest.raises(DrrError, match="no snapshots"):
        steps_mod.checkpoints(final)
    for s in (20, 10):
        fake_checkpoint(tmp_path / "run" / "snapshots" / f"step-{s:06d}.pt", cfg, s)
    (tmp_path / "run" / "snapshots" / "step-10.pt.tmp").write_bytes(b"")  # not a snapshot name
    got = steps_mod.checkpoints(final)
    assert [s for s, _ in got] == [10, 20, 30] and got[-1][1] == final
    # how often snapshots are kept is not another run; another learning rate is
    other = tiny_config("transformer.train.steps=30", "transformer.train.lr=0.5")
    fake_checkpoint(tmp_path / "run" / "snapshots" / "step-000015.pt", other, 15)
    with pytest.raises(DrrError, match=r"step-000015\.pt: not a snapshot of .*transformer\.train\.lr"):
        steps_mod.checkpoints(final)


def row(steps, phase, fid, boot, key="k"):
    return {"steps": steps, "phase": phase, "n_samples": 4, "fid": fid, "fid_lo": fid - 1,
            "fid_hi": fid + 1, "precision": 0.5, "recall": 0.25, "boot_key": key,
            "boot_fid": np.asarray(boot, float), "checkpoint": f"ck-{steps}"}


def test_summary_gives_paired_differences_to_the_final_checkpoint():
    g = np.random.default_rng(0)
    shared = g.normal(size=200)                 # resampling noise common to both rows
    early = row(100, "revised", 30.0, 30 + shared + 0.1 * g.normal(size=200))
    last = row(300, "revised", 20.0, 20 + shared)
    drafts = [row(100, "draft", 50.0, 50 + shared), row(300, "draft", 45.0, 45 + shared)]
    table = steps_mod.summary([last, early, *drafts])
    assert [(t["steps"], t["phase"]) for t in table] == [(100, "draft"), (100, "revised"),
                                                         (300, "draft"), (300, "revised")]
    t = table[1]
    lo, hi = basic_interval(10.0, early["boot_fid"] - last["boot_fid"])
    assert t["minus_final"] == 10.0 and (t["minus_final_lo"], t["minus_final_hi"]) == (lo, hi)
    assert hi - lo < 1.0                       # the shared noise cancels in the pairing
    assert table[0]["minus_final"] == 5.0 and table[3]["minus_final"] == 0.0
    with pytest.raises(DrrError, match="boot_key differs"):
        steps_mod.summary([last, row(100, "revised", 30.0, shared, key="other")])


def test_markdown_and_plot(tmp_path):
    boot = np.zeros(10)
    table = steps_mod.summary([row(s, p, f, boot + f) for s, p, f in
                               [(1000, "revised", 120.0), (1000, "draft", 150.0),
                                (3000, "revised", 110.0), (3000, "draft", 140.0)]])
    text = steps_mod.markdown("small", table, "steps.png")
    assert "| 1,000 | revised | 120.00 [119.00, 121.00] | +10.00 [+10.00, +10.00] |" in text
    assert "| 3,000 | revised | 110.00 [109.00, 111.00] | — |" in text
    steps_mod.plot("small", table, tmp_path / "steps.png")
    assert (tmp_path / "steps.png").read_bytes()[:4] == b"\x89PNG"


def test_an_ar_model_is_sampled_and_scored_without_drafts(tmp_path):
    """Raster-order sampling makes no draft (drr.sampling.sampler refuses save_drafts for it): the
    AR model's checkpoints are sampled without drafts and scored on their revised images only."""
    ctx = steps_mod.steps_config(tiny_config(), 1000)
    ar = steps_mod.steps_config(tiny_config("transformer.model.kind=ar"), 1000)
    assert steps_mod.phases(ctx) == ("draft", "revised") and ctx["generation"]["save_drafts"] is True
    assert steps_mod.phases(ar) == ("revised",) and ar["generation"]["save_drafts"] is False
    assert ar["generation"]["num_samples"] == ctx["generation"]["num_samples"] == 1000
    boot = np.zeros(10)
    table = steps_mod.summary([row(s, "revised", f, boot + f) for s, f in [(625, 130.0), (1875, 100.0)]])
    steps_mod.plot("small-ar", table, tmp_path / "ar.png")
    assert (tmp_path / "ar.png").read_bytes()[:4] == b"\x89PNG"
