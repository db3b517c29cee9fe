"""FID against training compute (docs/small-suite.md, protocol v5 §2, §8): the analytic training
FLOPs of both kinds (drr.transformer.flops), the core-seconds of a training log, the report that
puts both models in one figure (drr.reports.fid_compute), and the rules that make it."""

import math

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from drr.transformer import flops as F
from drr.transformer.build import build_transformer
from drr.transformer.model import TransformerConfig, sample_masks


def small_model(kind="contextual", cond="class") -> TransformerConfig:
    return TransformerConfig(n_spatial=2, n_depth=1, d_model=64, head_dim=32, code_shape=(4, 4, 3),
                             codebook_size=16, embed_dim=8, kind=kind, cond_type=cond, num_classes=10,
                             vocab_size=50, text_length=5)


# --- analytic training FLOPs ---------------------------------------------------------------------

def test_the_expected_mask_count_is_that_of_eq_10():
    assert F.expected_masked(64) == pytest.approx(41.221, abs=1e-3)
    assert F.expected_masked(64) - 128 / math.pi == pytest.approx(0.5, abs=0.05)   # 2N/π + about 1/2
    got = sample_masks(100_000, 64, torch.Generator().manual_seed(0)).sum(1).double().mean().item()
    assert got == pytest.approx(F.expected_masked(64), abs=0.1)    # standard error about 0.06
    assert F.expected_masked(1) == 1.0


@pytest.mark.parametrize("kind", ["contextual", "ar"])
@pytest.mark.parametrize("cond", ["class", "text"])
def test_the_forward_count_is_what_torch_counts_plus_the_attention(kind, cond):
    """torch's FLOP counter over the model's forward at a fixed mask sees every matrix product but
    not the CPU attention kernel: with the attention added (4·t·s·d a block) it is the analytic
    count, for both kinds and both condition types."""
    c = small_model(kind, cond)
    model = build_transformer(c, torch.randn(c.codebook_size, c.embed_dim))
    b, n, scored = 2, c.num_positions, 7
    g = torch.Generator().manual_seed(0)
    codes = torch.randint(0, c.codebook_size, (b, n, c.depth), generator=g)
    cond_ids = torch.randint(1, c.cond_vocab, (b, c.cond_length), generator=g)
    mask = torch.zeros(b, n, dtype=torch.bool)
    mask[:, : n if kind == "ar" else scored] = True
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(codes, mask, cond_ids)
    m = int(mask[0].sum())
    seq = c.cond_length + n - (kind == "ar")
    attention = 4 * c.d_model * (c.n_spatial * seq * seq + c.n_depth * m * c.depth ** 2)
    assert counter.get_total_flops() / b + attention == F.forward_flops_per_sample(c, m)
    assert F.train_flops_per_sample(c) == 3 * F.forward_flops_per_sample(c)


def test_training_flops_are_linear_in_steps_and_batch():
    for kind in ("contextual", "ar"):
        c = small_model(kind)
        one = F.train_flops(c, 1, 1)
        assert F.train_flops(c, 10, 32) == pytest.approx(320 * one)
        assert F.train_flops(c, 10, 64) == pytest.approx(2 * F.train_flops(c, 10, 32))
        assert F.train_flops(c, 0, 32) == 0


def test_contextual_against_ar_of_the_same_size():
    """The AR model scores every position (N against E|m|), reads one stack fewer and projects each
    depth's embedding apart; the difference is exactly those terms."""
    ctx, ar = small_model("contextual"), small_model("ar")
    d, lc, n, depth, nz, k = 64, 1, 16, 3, 8, 16
    m = F.expected_masked(n)

    def block(tokens, seq):
        return 2 * tokens * 12 * d * d + 4 * tokens * seq * d

    per_position = (ctx.n_depth * block(depth, depth) + 2 * (depth - 1) * nz * d + 2 * depth * d * k)
    want = (ctx.n_spatial * (block(lc + n - 1, lc + n - 1) - block(lc + n, lc + n))
            + 2 * (n - 1) * depth * nz * d - 2 * n * nz * d + (n - m) * per_position)
    assert F.forward_flops_per_sample(ar) - F.forward_flops_per_sample(ctx) == pytest.approx(want)
    assert F.train_flops_per_sample(ar) > F.train_flops_per_sample(ctx)
    # at the same number of scored positions only the spatial sequence and the input projection differ
    assert F.forward_flops_per_sample(ar, m) - F.forward_flops_per_sample(ctx, m) == pytest.approx(
        want - (n - m) * per_position)


def test_the_small_suite_models():
    """small and small-ar have the same blocks; per code map the AR step costs 1.25x the
    contextual one (every position scored against E|m| = 41.2 of 64)."""
    from drr.core.config import REPO, load_config
    cfgs = {e: TransformerConfig.from_experiment(load_config(REPO / f"configs/experiments/{e}.yaml"))
            for e in ("small", "small-ar")}
    ctx, ar = (F.train_flops_per_sample(cfgs[e]) for e in ("small", "small-ar"))
    assert ctx == pytest.approx(927.07e6, rel=1e-4) and ar == pytest.approx(1159.10e6, rel=1e-4)
    assert ar / ctx == pytest.approx(1.25, abs=0.01)
