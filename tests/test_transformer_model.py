"""Contextual RQ-Transformer: bidirectional context, depth causality, eq. 10 masks, eq. 11 loss,
conditions, and the paper's parameter counts."""

import math

import pytest
import torch
import torch.nn.functional as F

from drr.core.config import load_config
from drr.transformer.build import count_parameters
from drr.transformer.model import (
    ContextualRQTransformer,
    KVCache,
    TransformerConfig,
    gamma_cosine,
    masked_nll,
    sample_masks,
    text_nll,
)


def small(cond_type="class", depth=3, **kw) -> ContextualRQTransformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(n_spatial=2, n_depth=2, d_model=32, head_dim=8, code_shape=(3, 3, depth),
                            codebook_size=11, embed_dim=6, cond_type=cond_type, num_classes=5,
                            vocab_size=13, text_length=4, **kw)
    model = ContextualRQTransformer(cfg, torch.randn(12, 6)).double().eval()
    return model


def random_inputs(model, b=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    c = model.config
    codes = torch.randint(0, c.codebook_size, (b, c.num_positions, c.depth), generator=g)
    mask = torch.zeros(b, c.num_positions, dtype=torch.bool)
    mask[:, [0, 4, 7]] = True
    cond = torch.randint(1, c.cond_vocab, (b, c.cond_length), generator=g)
    return codes, mask, cond


def test_bidirectional_every_unmasked_position_reaches_every_masked_one():
    model = small()
    codes, mask, cond = random_inputs(model)
    base = model(codes, mask, cond)["logits"]
    for n in (~mask[0]).nonzero().flatten().tolist():
        changed = codes.clone()
        changed[0, n, 0] = (changed[0, n, 0] + 1) % model.config.codebook_size
        out = model(changed, mask, cond)["logits"]
        # rows of sample 0 (its masked positions) all change; sample 1 is untouched
        per_position = (out - base).abs().amax(dim=(1, 2))
        assert (per_position[:3] > 1e-9).all(), n
        assert (per_position[3:] == 0).all()


def test_masked_positions_do_not_leak_their_codes():
    model = small()
    codes, mask, cond = random_inputs(model)
    changed = codes.clone()
    changed[mask] = (changed[mask] + 3) % model.config.codebook_size
    h1, _ = model.context(codes, mask, cond)
    h2, _ = model.context(changed, mask, cond)
    assert torch.equal(h1, h2)


def test_depth_transformer_is_causal_over_depth():
    model = small(depth=4)
    codes, mask, cond = random_inputs(model)
    base = model(codes, mask, cond)["logits"]  # (M, D, K); depth d sees codes < d of its position
    for d in range(4):
        changed = codes.clone()
        changed[mask] = changed[mask].clone()
        sub = changed[mask]
        sub[:, d:] = (sub[:, d:] + 1) % model.config.codebook_size
        changed[mask] = sub
        out = model(changed, mask, cond)["logits"]
        assert torch.equal(out[:, :d + 1], base[:, :d + 1]), d
        if d + 1 < 4:
            assert (out[:, d + 1] - base[:, d + 1]).abs().amax() > 1e-9, d


def test_depth_logits_step_by_step_equal_teacher_forcing():
    model = small(depth=4)
    codes, mask, cond = random_inputs(model)
    out = model(codes, mask, cond)
    h, _ = model.context(codes, mask, cond)
    h_sel = h[out["batch_index"], out["position"]]
    for d in range(4):
        step = model.depth_logits(h_sel, out["targets"][:, :d])[:, -1]
        torch.testing.assert_close(step, out["logits"][:, d])


def test_cached_depth_steps_equal_depth_logits():
    """The samplers' depth_step (one token a depth, key/value cache) gives depth_logits' logits."""
    model = small(depth=4)
    codes, mask, cond = random_inputs(model)
    out = model(codes, mask, cond)
    h, _ = model.context(codes, mask, cond)
    h_sel, targets = h[out["batch_index"], out["position"]], out["targets"]
    cache = KVCache(4)
    partial = torch.zeros(len(h_sel), model.config.embed_dim)
    for d in range(4):
        step = model.depth_step(cache, h_sel, partial, d)
        torch.testing.assert_close(step, model.depth_logits(h_sel, targets[:, :d])[:, -1])
        partial = partial + F.embedding(targets[:, d], model.code_emb)
    assert cache.length == 4


def test_mask_sampler_follows_eq_10():
    n, b = 64, 4000
    masks = sample_masks(b, n, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    r = torch.rand(b, generator=g)  # the sampler's first draw
    expected = torch.ceil(gamma_cosine(r) * n).long().clamp(1, n)
    assert torch.equal(masks.sum(1), expected)
    assert masks.sum(1).min() >= 1
    # E[|m|/N] = integral of cos(pi r / 2) over [0, 1] = 2/pi (plus the ceil's < 1/N)
    assert abs(masks.float().mean().item() - 2 / math.pi) < 0.02
    # positions uniform: every position masked about equally often
    freq = masks.float().mean(0)
    assert (freq - freq.mean()).abs().max() < 0.05
    assert gamma_cosine(torch.tensor(0.0)) == 1 and abs(gamma_cosine(torch.tensor(1.0))) < 1e-7


def test_loss_scores_masked_positions_only():
    model = small()
    codes, mask, cond = random_inputs(model)
    out = model(codes, mask, cond)
    assert out["targets"].shape == (int(mask.sum()), model.config.depth)
    assert torch.equal(torch.stack([out["batch_index"], out["position"]], 1), mask.nonzero())
    # eq. 11 by hand: every position through the depth transformer, then only masked rows kept
    h, _ = model.context(codes, mask, cond)
    all_logits = model.depth_logits(h.flatten(0, 1), codes.flatten(0, 1))
    keep = mask.flatten()
    manual = F.cross_entropy(all_logits[keep].flatten(0, 1), codes.flatten(0, 1)[keep].flatten())
    torch.testing.assert_close(masked_nll(out), manual)
    everything = F.cross_entropy(all_logits.flatten(0, 1), codes.flatten())
    assert not torch.isclose(masked_nll(out), everything)


def test_null_condition_and_dropout():
    model = small()
    cond = torch.tensor([[1], [2], [3], [4]] * 250)
    dropped_cond, dropped = model.drop_condition(cond, 0.3, torch.Generator().manual_seed(0))
    assert abs(dropped.float().mean().item() - 0.3) < 0.05
    assert (dropped_cond[dropped] == model.null_id).all()
    assert torch.equal(dropped_cond[~dropped], cond[~dropped])
    assert model.cond_emb.num_embeddings == 5 + 1
    codes, mask, c = random_inputs(model)
    assert not torch.equal(model(codes, mask, c)["logits"],
                           model(codes, mask, model.null_condition(c))["logits"])


def test_text_condition_is_causal_and_predicts_next_token():
    model = small("text")
    codes, mask, cond = random_inputs(model)
    out = model(codes, mask, cond)
    assert out["cond_logits"].shape == (2, 4, 13)
    changed_codes = (codes + 1) % model.config.codebook_size
    changed_text = cond.clone()
    changed_text[:, 2:] = (changed_text[:, 2:] % 12) + 1
    out2 = model(changed_codes, mask, changed_text)
    # text token i sees text tokens <= i only, never the image
    assert torch.equal(out2["cond_logits"][:, :2], out["cond_logits"][:, :2])
    dropped = torch.tensor([False, True])
    loss = text_nll(out, cond, dropped)
    manual = F.cross_entropy(out["cond_logits"][0, :-1], cond[0, 1:])
    torch.testing.assert_close(loss, manual)


def test_code_embeddings_are_the_tokenizer_codebook_and_frozen():
    model = small()
    weight = torch.randn(12, 6)
    model.set_code_embeddings(weight)
    assert torch.equal(model.code_emb, weight[:11].double())
    assert "code_emb" in model.state_dict()
    assert all(p is not model.code_emb for p in model.parameters())


PAPER = [  # experiment, paper's parameter count (App. A.2 Table 1; App. B)
    ("in256-crq-371m", 371e6), ("in256-crq-821m", 821e6), ("in256-crq-1400m", 1.4e9),
    ("cc3m-crq-366m", 366e6), ("cc3m-crq-654m", 654e6), ("in256-cvq-350m", 350e6),
]


@pytest.mark.parametrize("name,paper", PAPER)
def test_parameter_counts_match_the_paper(name, paper):
    cfg = TransformerConfig.from_experiment(load_config(f"configs/experiments/{name}.yaml"))
    n = count_parameters(cfg)  # meta device: nothing allocated
    print(f"{name}: {n / 1e6:.1f}M parameters (paper {paper / 1e6:.0f}M)")
    assert abs(n / paper - 1) < 0.02
    assert cfg.head_dim == 64
