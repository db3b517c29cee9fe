"""Draft-and-Revise decoding: balanced partitions (eq. 12), UPDATE (Algorithm 1), Algorithm 2,
per-phase guidance / temperature / top-k / top-p, batch-independent per-sample randomness,
inpainting (App. D.3) and the confidence-based Top-C / Top-C-50% UPDATE rules (App. C)."""

from pathlib import Path

import pytest
import torch
import torch.nn as nn

from drr.core.config import load_config, override_from_dotted
from drr.core.errors import DrrError
from drr.sampling import (
    DecodeSettings,
    PhaseSettings,
    balanced_partition,
    draft_and_revise,
    filter_logits,
    guide,
    sample_categorical,
    sample_seeds,
    update,
)
from drr.transformer.model import ContextualRQTransformer, TransformerConfig

REPO = Path(__file__).resolve().parents[1]


def small_model() -> ContextualRQTransformer:
    """A random 3x3x3 model (K = 11, 5 classes) in float64, with weights large enough that the
    context matters."""
    torch.manual_seed(0)
    cfg = TransformerConfig(n_spatial=2, n_depth=2, d_model=32, head_dim=8, code_shape=(3, 3, 3),
                            codebook_size=11, embed_dim=6, num_classes=5)
    model = ContextualRQTransformer(cfg, torch.randn(11, 6)).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            p.mul_(20)
    return model


class Recording(nn.Module):
    """Delegates to a model and records every context call (codes, mask, cond) and the row count
    and condition of every depth call."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.config = model.config
        self.contexts: list[dict] = []
        self.depths: list[dict] = []

    @property
    def code_emb(self):
        return self.model.code_emb

    def null_condition(self, cond):
        return self.model.null_condition(cond)

    def context(self, codes, mask, cond):
        self.contexts.append({"codes": codes.clone(), "mask": mask.clone(), "cond": cond.clone()})
        return self.model.context(codes, mask, cond)

    def depth_step(self, cache, h, partial, d):
        self.depths.append({"rows": len(h), "depth": d, "cached": cache.length})
        return self.model.depth_step(cache, h, partial, d)


class Table(nn.Module):
    """A stand-in model whose logits are a fixed table[condition, position] (every depth, any
    context): known distributions, so guidance and confidences can be checked exactly."""

    def __init__(self, table: torch.Tensor, depth: int = 2):
        super().__init__()
        conds, n, k = table.shape
        self.config = TransformerConfig(n_spatial=1, n_depth=1, d_model=8, head_dim=8,
                                        code_shape=(n, 1, depth), codebook_size=k, embed_dim=4,
                                        num_classes=conds - 1)
        self.table = table
        self.code_emb = torch.zeros(k, 4)  # for the sampler's partial sums, which it ignores

    def null_condition(self, cond):
        return torch.full_like(cond, self.config.num_classes)

    def context(self, codes, mask, cond):
        b, n, _ = codes.shape
        h = torch.stack([cond[:, :1].expand(b, n), torch.arange(n).expand(b, n)], -1).double()
        return h, None

    def depth_step(self, cache, h, partial, d):
        return self.table[h[:, 0].long(), h[:, 1].long()]


def random_table(conds=4, n=6, k=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(conds, n, k, generator=g, dtype=torch.float64)


def settings(t_draft=4, t_revise=2, m=2, strategy="random", draft=None, revise=None):
    return DecodeSettings(t_draft, t_revise, m, strategy, draft or PhaseSettings(),
                          revise or PhaseSettings())


def generators(b, seed=0):
    return [torch.Generator().manual_seed(seed + i) for i in range(b)]


# -- partitions (eq. 12) ---------------------------------------------------------------------
@pytest.mark.parametrize("n,T", [(6, 4), (64, 8), (9, 4), (7, 7), (10, 3), (5, 1)])
def test_partition_covers_every_position_once_and_is_balanced(n, T):
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        parts = balanced_partition(n, T, g)
        assert parts.shape == (n,) and parts.dtype == torch.long
        assert parts.min() == 0 and parts.max() == T - 1  # every position in exactly one part
        sizes = torch.bincount(parts, minlength=T)
        assert sizes.sum() == n and sizes.max() - sizes.min() <= 1


def test_partition_is_uniform():
    n, T, draws = 6, 4, 6000  # sizes 2, 2, 1, 1: which parts are big must be random too
    g = torch.Generator().manual_seed(1)
    hits = torch.zeros(n, T)
    big = torch.zeros(T)
    for _ in range(draws):
        parts = balanced_partition(n, T, g)
        hits[torch.arange(n), parts] += 1
        big += torch.bincount(parts, minlength=T) == 2
    # each position lands in each part with probability E|m^t| / N = 1.5 / 6
    assert (hits / draws - 0.25).abs().max() < 0.03
    assert (big / draws - 0.5).abs().max() < 0.04


def test_region_partition_covers_exactly_the_region():
    g = torch.Generator().manual_seed(2)
    region = torch.zeros(16, dtype=torch.bool)
    region[[1, 2, 5, 8, 9, 10, 13]] = True
    hits = torch.zeros(16)
    for _ in range(2000):
        parts = balanced_partition(16, 3, g, region)
        assert torch.equal(parts >= 0, region)
        sizes = torch.bincount(parts[region], minlength=3)
        assert sizes.tolist() in ([3, 2, 2], [2, 3, 2], [2, 2, 3])
        hits += parts == 0
    assert (hits[region] / 2000 - 7 / 3 / 7).abs().max() < 0.04
    # more parts than positions: clamped to one position a part
    parts = balanced_partition(16, 10, g, region)
    assert sorted(parts[region].tolist()) == list(range(7))
    assert (balanced_partition(16, 4, g, torch.zeros(16, dtype=torch.bool)) == -1).all()


# -- UPDATE (Algorithm 1) and Algorithm 2 -----------------------------------------------------
def test_update_changes_only_the_current_part():
    model = Recording(small_model())
    b, n, d = 3, 9, 3
    gens = generators(b)
    codes = torch.randint(0, 11, (b, n, d), generator=torch.Generator().manual_seed(0))
    parts = torch.stack([balanced_partition(n, 4, g) for g in gens])
    out = update(model, codes, torch.tensor([[0], [1], [2]]), parts, PhaseSettings(), gens)
    inputs = [c["codes"] for c in model.contexts] + [out]
    assert len(model.contexts) == 4
    for t, call in enumerate(model.contexts):
        assert torch.equal(call["mask"], parts == t)  # revise: exactly part t is masked
        changed = (inputs[t + 1] != inputs[t]).any(-1)
        assert not (changed & ~call["mask"]).any()  # nothing outside part t changes at step t
    assert (out != codes).any(-1).float().mean() > 0.5
    # D depth steps per part, each reading one new token after the d cached ones
    assert [(c["depth"], c["cached"]) for c in model.depths] == [(0, 0), (1, 1), (2, 2)] * 4


def test_draft_starts_empty_and_each_revise_pass_touches_every_position_once():
    model = Recording(small_model())
    s = settings(t_draft=4, t_revise=3, m=2)
    draft_and_revise(model, torch.tensor([[1], [4]]), s, sample_seeds(0, range(2)))
    masks = [c["mask"] for c in model.contexts]
    assert len(masks) == 4 + 2 * 3
    draft, revise = masks[:4], masks[4:]
    assert draft[0].all()  # S^empty: every position masked at the first step
    generated = [draft[t] & ~draft[t + 1] for t in range(3)] + [draft[3]]
    for t in range(3):  # positions not generated yet stay masked; generated ones stay unmasked
        assert torch.equal(draft[t + 1], draft[t] & ~generated[t])
    assert torch.equal(sum(g.long() for g in generated), torch.ones(2, 9, dtype=torch.long))
    for sizes in torch.stack(generated, 1).sum(-1):  # balanced: 9 positions in 4 parts
        assert sorted(sizes.tolist()) == [2, 2, 2, 3]
    for m in range(2):
        passes = torch.stack(revise[3 * m:3 * m + 3])
        assert torch.equal(passes.long().sum(0), torch.ones(2, 9, dtype=torch.long))
        assert (passes.sum(-1) == 3).all()
    assert not torch.equal(revise[0], revise[3])  # a fresh partition each revise pass


@pytest.mark.parametrize("m", [2, 0])
def test_phase_hook_is_called_where_each_phase_ends_and_changes_no_code(m):
    """on_phase (the speed measurement's clock) is called once the draft's T_draft steps are done
    and once the M revise passes are (also for M = 0); the codes are those of a call without it."""
    model = Recording(small_model())
    s = settings(t_draft=4, t_revise=3, m=m)
    cond, seeds = torch.tensor([[1], [4]]), sample_seeds(0, range(2))
    events = []
    codes, draft = draft_and_revise(
        model, cond, s, seeds, return_draft=True,
        on_phase=lambda phase: events.append((phase, len(model.contexts))),
        on_pass=lambda i, c: events.append((f"pass {i}", len(model.contexts))))
    assert events == ([("draft", 4), ("pass 0", 4)] + [(f"pass {i}", 4 + 3 * i) for i in range(1, m + 1)]
                      + [("revise", 4 + 3 * m)])
    plain, plain_draft = draft_and_revise(small_model(), cond, s, seeds, return_draft=True)
    assert torch.equal(codes, plain) and torch.equal(draft, plain_draft)


# -- per-sample randomness ---------------------------------------------------------------------
@pytest.mark.parametrize("strategy,guidance_in", [("random", "revise"), ("top-c-50", "both"),
                                                  ("top-c", "none")])
def test_same_seed_same_codes_for_batch_sizes_1_3_8(strategy, guidance_in):
    model = small_model()
    cfg = load_config(REPO / "configs/experiments/tiny.yaml", override_from_dotted([
        "sampling.t_draft=4", f"sampling.strategy={strategy}",
        f"sampling.guidance_in={guidance_in}"]))
    s = DecodeSettings.from_config(cfg["sampling"])
    cond = torch.tensor([[0], [1], [2], [3], [4], [0], [1], [2]])
    seeds = sample_seeds(7, range(8))
    full, draft = draft_and_revise(model, cond, s, seeds, return_draft=True)
    assert full.shape == (8, 9, 3) and full.dtype == torch.long
    assert full.min() >= 0 and full.max() < 11
    three, draft3 = draft_and_revise(model, cond[2:5], s, seeds[2:5], return_draft=True)
    one = draft_and_revise(model, cond[6:7], s, seeds[6:7])
    assert torch.equal(three, full[2:5]) and torch.equal(draft3, draft[2:5])
    assert torch.equal(one, full[6:7])
    other = draft_and_revise(model, cond, s, sample_seeds(8, range(8)))
    assert (other != full).float().mean() > 0.5
    # samples 0 and 5 share their class but not their seed
    assert (full[0] != full[5]).float().mean() > 0.5


def test_sample_seeds_depend_on_index_and_experiment_seed_only():
    seeds = sample_seeds(3, range(10))
    assert seeds.dtype == torch.long and (seeds >= 0).all() and len(set(seeds.tolist())) == 10
    assert torch.equal(sample_seeds(3, [4, 5]), seeds[4:6])
    assert torch.equal(sample_seeds(3, torch.tensor([9])), seeds[9:])
    assert not (sample_seeds(4, range(10)) == seeds).any()


# -- guidance ------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["none", "draft", "revise", "both"])
def test_guidance_only_in_configured_phases_as_one_batched_forward(where):
    cfg = load_config(REPO / "configs/experiments/tiny.yaml", override_from_dotted([
        "sampling.t_draft=3", "sampling.t_revise=2", "sampling.revise_iterations=2",
        f"sampling.guidance_in={where}", "sampling.guidance_scale=1.5"]))
    s = DecodeSettings.from_config(cfg["sampling"])
    assert (s.draft.guidance is not None) == (where in ("draft", "both"))
    assert (s.revise.guidance is not None) == (where in ("revise", "both"))
    model = Recording(small_model())
    cond = torch.tensor([[1], [3]])
    draft_and_revise(model, cond, s, sample_seeds(0, range(2)))
    null = model.null_condition(cond)
    masks = [c["mask"][:2] for c in model.contexts]
    sampled = committed(masks[:3]) + masks[3:]  # positions sampled at each step
    assert len(model.contexts) == 3 + 2 * 2 and len(model.depths) == 3 * len(model.contexts)
    for i, call in enumerate(model.contexts):
        guided = (where in ("draft", "both")) if i < 3 else (where in ("revise", "both"))
        if guided:  # conditional and null rows in one call of 2B rows
            assert torch.equal(call["cond"], torch.cat([cond, null]))
        else:
            assert torch.equal(call["cond"], cond)
        # the depth calls of this step: conditional and null rows together (2M) when guided
        rows = [c["rows"] for c in model.depths[3 * i:3 * i + 3]]
        assert rows == [int(sampled[i].sum()) * (2 if guided else 1)] * 3


def test_guidance_math():
    c, u = torch.randn(4, 7, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    torch.testing.assert_close(guide(c, u, 1.0), c)
    torch.testing.assert_close(guide(c, u, 0.0), u)
    torch.testing.assert_close(guide(c, u, 2.5), u + 2.5 * (c - u))


@pytest.mark.parametrize("scale", [None, 1.0, 3.0])
def test_guided_sampling_uses_null_plus_s_times_cond_minus_null(scale):
    table = random_table(conds=4, n=6, k=5)
    model = Table(table)
    cond = torch.tensor([[0], [2]])
    greedy = PhaseSettings(top_k=1, guidance=scale)
    out = draft_and_revise(model, cond, settings(t_draft=3, m=1, draft=greedy, revise=greedy),
                           sample_seeds(0, range(2)))
    logits = table[cond[:, 0]] if scale is None else guide(table[cond[:, 0]], table[3], scale)
    assert torch.equal(out, logits.argmax(-1)[..., None].expand(-1, -1, 2))
    if scale == 3.0:  # guidance changes the result here
        assert not torch.equal(logits.argmax(-1), table[cond[:, 0]].argmax(-1))


# -- temperature, top-k, top-p -----------------------------------------------------------------
def test_low_temperature_and_top_k_1_give_the_argmax():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 9, generator=g, dtype=torch.float64)
    u = torch.rand(500, generator=g, dtype=torch.float64)
    for filtered in (filter_logits(logits, temperature=1e-4), filter_logits(logits, top_k=1)):
        assert torch.equal(sample_categorical(filtered.softmax(-1), u), logits.argmax(-1))
    top3 = filter_logits(logits, top_k=3)
    assert (top3.isfinite().sum(-1) == 3).all()
    assert torch.equal(top3.isfinite(), logits >= logits.topk(3).values[:, -1:])


def test_top_p_keeps_the_smallest_set_with_mass_p():
    logits = torch.tensor([[0.15, 0.5, 0.05, 0.3]], dtype=torch.float64).log()
    for p, kept in [(0.5, [1]), (0.51, [1, 3]), (0.79, [1, 3]), (0.81, [0, 1, 3]),
                    (1.0, [0, 1, 2, 3])]:
        filtered = filter_logits(logits, top_p=p)
        assert filtered[0].isfinite().nonzero().flatten().tolist() == kept, p
    probs = filter_logits(logits, top_p=0.79).softmax(-1)
    codes = sample_categorical(probs.expand(2000, -1), torch.rand(2000, dtype=torch.float64))
    assert set(codes.tolist()) == {1, 3}
    assert abs((codes == 1).double().mean() - 0.5 / 0.8) < 0.03


def test_inverse_cdf_sampling_follows_the_distribution():
    probs = torch.tensor([[0.1, 0.0, 0.6, 0.3, 0.0]], dtype=torch.float64)
    u = torch.rand(20000, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    freq = torch.bincount(sample_categorical(probs.expand(20000, -1), u), minlength=5) / 20000
    assert (freq - probs[0]).abs().max() < 0.015 and freq[1] == 0 and freq[4] == 0
    edge = sample_categorical(probs.float(), torch.tensor([1 - 1e-12]))  # rounds to 1.0 in float32
    assert edge.tolist() == [3]


# -- inpainting (App. D.3) -----------------------------------------------------------------------
def test_inpainting_changes_only_the_region():
    model = Recording(small_model())
    g = torch.Generator().manual_seed(3)
    init = torch.randint(0, 11, (4, 9, 3), generator=g)
    region = torch.rand(4, 9, generator=g) < 0.5
    region[0] = False
    region[0, :2] = True  # 2 positions, fewer than T_draft: one position per step
    cond = torch.tensor([[0], [1], [2], [3]])
    s = settings(t_draft=4, t_revise=2, m=2, revise=PhaseSettings(temperature=0.8, guidance=1.5))
    out, draft = draft_and_revise(model, cond, s, sample_seeds(0, range(4)), region=region,
                                  init_codes=init, return_draft=True)
    for codes in (out, draft):
        assert torch.equal(codes[~region], init[~region])
    assert (out[region] != init[region]).any(-1).float().mean() > 0.6
    for call in model.contexts:  # positions outside the region are never masked
        assert not (call["mask"][:4] & ~region).any()
    assert torch.equal(model.contexts[0]["mask"], region)  # the draft starts with the region empty
    alone = draft_and_revise(model, cond[1:2], s, sample_seeds(0, [1]), region=region[1:2],
                             init_codes=init[1:2])
    assert torch.equal(alone, out[1:2])


# -- Top-C and Top-C-50% (App. C) ----------------------------------------------------------------
def confidence_table(n: int, k: int = 5) -> tuple[torch.Tensor, torch.Tensor]:
    """Each position's logits peak at one code with a position-specific sharpness: with top_k = 1
    the sampled stack is known, and its confidence (the model's probability) ranks positions."""
    sharpness = torch.randperm(n, generator=torch.Generator().manual_seed(5)).double() + 1
    table = torch.zeros(2, n, k, dtype=torch.float64)
    table[:, torch.arange(n), torch.arange(n) % k] = sharpness
    return table, sharpness


def committed(masks: list[torch.Tensor]) -> list[torch.Tensor]:
    """Positions generated at each draft step, from the masks of consecutive steps."""
    return [masks[t] & ~masks[t + 1] for t in range(len(masks) - 1)] + [masks[-1]]


def test_top_c_commits_the_most_confident_positions():
    table, sharpness = confidence_table(6)
    model = Recording(Table(table))
    s = settings(t_draft=3, m=0, strategy="top-c", draft=PhaseSettings(top_k=1))
    out = draft_and_revise(model, torch.zeros(1, 1, dtype=torch.long), s, sample_seeds(0, [0]))
    assert torch.equal(out[0, :, 0], torch.arange(6) % 5)
    order = sharpness.argsort(descending=True)
    steps = committed([c["mask"][0] for c in model.contexts])
    for t, step in enumerate(steps):  # 2 a step, most confident first
        assert set(step.nonzero().flatten().tolist()) == set(order[2 * t:2 * t + 2].tolist())
    # every pending position is sampled (masked) at each step, as in MaskGIT
    assert [int(c["mask"].sum()) for c in model.contexts] == [6, 4, 2]


def test_top_c_50_picks_uniformly_among_the_top_half():
    n, b = 8, 400
    table, sharpness = confidence_table(n)
    model = Recording(Table(table))
    s = settings(t_draft=n, m=0, strategy="top-c-50", draft=PhaseSettings(top_k=1))
    draft_and_revise(model, torch.zeros(b, 1, dtype=torch.long), s, sample_seeds(0, range(b)))
    masks = [c["mask"] for c in model.contexts]
    steps = committed(masks)
    for t, step in enumerate(steps):
        assert (step.sum(1) == 1).all()
        pending = masks[t]
        # rank of the chosen position's confidence among the pending ones (0 = most confident)
        chosen = step.float().argmax(1)
        rank = ((sharpness[None] > sharpness[chosen][:, None]) & pending).sum(1)
        assert (rank < (n - t + 1) // 2).all(), t
    first = torch.bincount(steps[0].float().argmax(1), minlength=n)
    top = sharpness.argsort(descending=True)
    assert first[top[4:]].sum() == 0
    assert ((first[top[:4]] - b / 4).abs() < 40).all()  # uniform among the top 4


# -- settings --------------------------------------------------------------------------------------
def test_settings_errors_name_the_config_key():
    with pytest.raises(DrrError, match=r"^sampling.t_draft: 100 parts for 9 positions$"):
        draft_and_revise(small_model(), torch.tensor([[0]]), settings(t_draft=100),
                         sample_seeds(0, [0]))
    with pytest.raises(DrrError, match=r"^sampling.t_revise: 10 parts for 9 positions$"):
        draft_and_revise(small_model(), torch.tensor([[0]]), settings(t_revise=10),
                         sample_seeds(0, [0]))
    with pytest.raises(DrrError, match="^sampling.strategy: 'top-k'"):
        settings(strategy="top-k")
    with pytest.raises(DrrError, match="^sampling.revise.temperature: 0"):
        settings(revise=PhaseSettings(temperature=0))
    with pytest.raises(DrrError, match="^sampling.draft.top_p: 1.5"):
        settings(draft=PhaseSettings(top_p=1.5))
    with pytest.raises(DrrError, match="^sampling.t_revise: 0 parts"):
        settings(t_revise=0)
    cfg = load_config(REPO / "configs/experiments/tiny.yaml")["sampling"]
    with pytest.raises(DrrError, match="^sampling.guidance_in: 'all'"):
        DecodeSettings.from_config({**cfg, "guidance_in": "all"})
    s = DecodeSettings.from_config(cfg)
    assert (s.t_draft, s.t_revise, s.revise_iterations, s.strategy) == (8, 2, 2, "random")
    assert s.draft == PhaseSettings(1.0, None, None, None)
    assert s.revise == PhaseSettings(0.8, None, None, 1.8)
