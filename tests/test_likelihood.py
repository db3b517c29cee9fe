"""The likelihood both RQ-Transformers share (drr/transformer/likelihood.py): the contextual model's
chain rule in random orders against a brute-force computation and against normalisation over every
code map of a toy model; the AR model's raster chain rule against its teacher-forced loss and
normalisation; the summary and the transformer report that carry them, and what its settings rerun."""

import itertools
import json
import math

import pytest
import torch
import yaml
from transformer_fixtures import make_tokenizer_and_codes, tiny_config

from drr.codes.store import open_code_map
from drr.core.config import save_config
from drr.transformer import report as report_mod
from drr.transformer.build import build_transformer
from drr.transformer.io import load_transformer
from drr.transformer.likelihood import (
    chain_rule_summary,
    order_nll,
    random_order_nll,
    random_orders,
    raster_nll,
)
from drr.transformer.model import TransformerConfig
from drr.transformer.train import evaluate_nll, train
from drr.workflow.plan import Plan

import plan_jobs
from workflow_fixtures import copy_workflow


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the 2-core machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def toy(kind="contextual", shape=(2, 2, 1), k=3, seed=0):
    """A random toy model in float64; random weights give conditionals far from consistent, so an
    order-dependent likelihood shows."""
    torch.manual_seed(seed)
    cfg = TransformerConfig(n_spatial=2, n_depth=1, d_model=16, head_dim=8, code_shape=shape,
                            codebook_size=k, embed_dim=4, cond_type="class", num_classes=2, kind=kind)
    model = build_transformer(cfg, torch.randn(k, 4)).double().eval()
    with torch.no_grad():  # larger weights than the init: conditionals that differ clearly
        for p in model.parameters():
            p.mul_(8.0)
    return model


def all_maps(model):
    """Every code map of the model's shape: (K^(N·D), N, D)."""
    c = model.config
    grid = itertools.product(range(c.codebook_size), repeat=c.num_positions * c.depth)
    return torch.tensor(list(grid)).reshape(-1, c.num_positions, c.depth)


def brute_force_nll(model, codes, cond, order):
    """-log q_π(S) from one plain forward per step: the model's own forward (eq. 5) with the
    positions order[t:] masked, scored at position order[t]."""
    total = torch.zeros(len(codes), dtype=torch.float64)
    with torch.no_grad():
        for t, n in enumerate(order):
            mask = torch.zeros(codes.shape[:2], dtype=torch.bool)
            mask[:, list(order[t:])] = True
            out = model(codes, mask, cond)
            logp = out["logits"].log_softmax(-1).gather(-1, out["targets"][..., None]).squeeze(-1).sum(-1)
            at_n = out["position"] == n
            total -= logp[at_n]
    return total


def test_random_order_nll_one_position_a_step_is_the_brute_force_chain_rule():
    model = toy()
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, 3, (6, 4, 1), generator=g)
    cond = torch.randint(0, 2, (6, 1), generator=g)
    got = random_order_nll(model, codes, cond, orders=3, seed=5)
    ranks = random_orders(6, 3, 4, seed=5)
    assert got.shape == (6, 3)
    for o in range(3):
        for i in range(6):
            order = ranks[o, i].argsort().tolist()  # positions in the order they are generated
            want = brute_force_nll(model, codes[i:i + 1], cond[i:i + 1], order)
            assert float(got[i, o]) == pytest.approx(float(want[0]), rel=1e-10)
    # a random model is not consistent: the orders disagree
    assert (got.max(1).values - got.min(1).values).max() > 0.1


@pytest.mark.parametrize("shape,steps", [((2, 2, 1), None), ((1, 2, 2), None), ((1, 2, 2), 1),
                                         ((2, 2, 1), 2)])
def test_the_chain_rule_in_any_fixed_order_is_a_normalised_distribution(shape, steps):
    """Σ over all K^(N·D) code maps of exp(-NLL) is 1 for one order shared by every map: at one
    position a step (the model's chain rule; D = 2 also tests the depth chain), and with fewer
    parts than positions (the T-step draft's likelihood for that partition)."""
    model = toy(shape=shape)
    maps = all_maps(model)
    n = model.config.num_positions
    for perm in itertools.permutations(range(n)):
        ranks = torch.tensor(perm).argsort().expand(1, len(maps), n)
        for label in (0, 1):
            cond = torch.full((len(maps), 1), label)
            nll = order_nll(model, maps, cond, ranks, steps=steps, batch_size=32)
            assert float(torch.logsumexp(-nll[:, 0], 0)) == pytest.approx(0.0, abs=1e-10)


def test_orders_do_not_depend_on_the_batch_size_and_are_checked():
    model = toy()
    g = torch.Generator().manual_seed(2)
    codes = torch.randint(0, 3, (7, 4, 1), generator=g)
    cond = torch.randint(0, 2, (7, 1), generator=g)
    a = random_order_nll(model, codes, cond, orders=2, seed=0, batch_size=3)
    b = random_order_nll(model, codes, cond, orders=2, seed=0, batch_size=256)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    c = random_order_nll(model, codes, cond, orders=2, seed=1)
    assert not torch.allclose(a, c)
    with pytest.raises(ValueError, match="steps 5"):
        random_order_nll(model, codes, cond, orders=1, seed=0, steps=5)
    with pytest.raises(ValueError, match="orders 0"):
        random_order_nll(model, codes, cond, orders=0, seed=0)


def test_raster_nll_is_the_teacher_forced_loss_summed_and_normalised():
    model = toy(kind="ar", shape=(1, 2, 2))
    maps = all_maps(model)
    cond = torch.zeros(len(maps), 1, dtype=torch.long)
    nll = raster_nll(model, maps, cond, batch_size=10)
    assert nll.shape == (len(maps),) and nll.dtype == torch.float64
    assert float(torch.logsumexp(-nll, 0)) == pytest.approx(0.0, abs=1e-10)
    # the mean over maps, per code, is the held-out NLL the training reports for an AR model
    per_code = evaluate_nll(model, maps, cond, batch_size=7)
    assert float(nll.mean()) / (2 * 2) == pytest.approx(per_code, rel=1e-6)  # it sums in float32
    # and each map's value is the sum of its own teacher-forced cross-entropies
    out = model(maps[:3], None, cond[:3])
    ce = torch.nn.functional.cross_entropy(out["logits"].flatten(0, 1), out["targets"].flatten(),
                                           reduction="none").reshape(3, -1).sum(1)
    torch.testing.assert_close(nll[:3], ce, rtol=1e-12, atol=1e-12)


def test_summary_fields_for_both_kinds():
    ctx, ar = toy(), toy(kind="ar")
    g = torch.Generator().manual_seed(3)
    codes = torch.randint(0, 3, (5, 4, 1), generator=g)
    cond = torch.randint(0, 2, (5, 1), generator=g)
    s = chain_rule_summary(ctx, codes, cond, orders=3, seed=0)
    nll = random_order_nll(ctx, codes, cond, orders=3, seed=0)
    assert s["order"] == "random" and (s["maps"], s["orders"]) == (5, 3)
    assert s["nats_per_map"] == pytest.approx(float(nll.mean()))
    assert s["per_order"] == pytest.approx(nll.mean(0).tolist())
    assert s["order_spread"] == pytest.approx(float(nll.std(1).pow(2).mean().sqrt()))
    assert s["se_over_maps"] == pytest.approx(float(nll.mean(1).std() / math.sqrt(5)))
    assert s["uniform"] == pytest.approx(4 * math.log(3))
    one = chain_rule_summary(ctx, codes, cond, orders=1, seed=0)
    assert one["order_spread"] == 0.0 and one["orders"] == 1
    r = chain_rule_summary(ar, codes, cond, orders=3, seed=0)
    assert r["order"] == "raster" and r["orders"] == 1 and r["order_spread"] == 0.0
    assert r["nats_per_map"] == pytest.approx(float(raster_nll(ar, codes, cond).mean()))


@pytest.mark.parametrize("kind", ["contextual", "ar"])
def test_the_transformer_report_gives_the_chain_rule_nll(tmp_path, kind):
    """report.json's chain_rule_nll is the summary of the first transformer.report.chain_rule_maps
    held-out maps, and the Markdown says it in nats per map; 0 maps: not computed."""
    settings = ["transformer.train.steps=3", f"transformer.model.kind={kind}",
                "transformer.report.chain_rule_maps=6", "transformer.report.chain_rule_orders=2"]
    cfg = tiny_config(*settings)
    tok, codes = make_tokenizer_and_codes(tmp_path, cfg, rows=12)
    ckpt = train(cfg, tok, codes, tmp_path / "run" / "checkpoint.pt")
    config = tmp_path / "config.yaml"
    save_config(cfg, config)
    out = tmp_path / "report.json"
    report_mod.main(["--config", str(config), "--transformer", str(ckpt), "--codes", str(codes),
                     "--json", str(out), "--markdown", str(tmp_path / "report.md")])
    got = json.loads(out.read_text())["chain_rule_nll"]
    model, _, _ = load_transformer(ckpt)
    cm = open_code_map(codes)
    maps = torch.from_numpy(cm.codes[:6].reshape(6, -1, 2).astype("int64"))
    labels = torch.from_numpy(cm.labels[:6].astype("int64"))[:, None]
    want = chain_rule_summary(model, maps, labels, orders=2, seed=cfg["seed"])
    assert got["maps"] == 6 and got["order"] == ("raster" if kind == "ar" else "random")
    assert got["nats_per_map"] == pytest.approx(want["nats_per_map"], rel=1e-6)
    assert 0 < got["nats_per_map"] < got["uniform"] * 1.5
    text = (tmp_path / "report.md").read_text()
    assert f"**{got['nats_per_map']:.1f} nats per map**" in text
    assert ("raster order" if kind == "ar" else "mean of 2 orders per map") in text
    none = report_mod.evaluate(tiny_config(*settings[:-2], "transformer.report.chain_rule_maps=0"),
                               ckpt, codes, None)
    assert none["chain_rule_nll"] is None
    assert "not computed" in report_mod.markdown(none, None)


def test_the_chain_rule_settings_rerun_that_report_and_nothing_else(tmp_path):
    """transformer.report is in the transformer_report stage keys: changing it plans that model's
    report again, and the claims report that reads it (its chain-rule NLL claim), and no
    training, sampling or other report."""
    root = copy_workflow(tmp_path)

    def plan():
        wf = yaml.safe_load((root / "configs/workflow.yaml").read_text())
        return Plan(root, dict(wf, suite="tiny"))

    before = plan_jobs.jobs(plan())
    path = root / "configs/experiments/tiny.yaml"
    doc = yaml.safe_load(path.read_text())
    doc.setdefault("transformer", {})["report"] = {"chain_rule_maps": 10, "chain_rule_orders": 3}
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    assert plan_jobs.rebuilt(before, plan()) == {"transformer_report:tiny", "report:claims"}
