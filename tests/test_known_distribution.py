"""Draft-and-Revise against a distribution whose likelihood is known exactly.

Code maps come from a mixture: component c (probability π_c) has a prototype map; each of the N
positions independently keeps the prototype's code stack with probability q, or takes a uniformly
random stack (each of its D codes uniform over K) otherwise. So

    p(S) = Σ_c π_c Π_n [q·1(S_n = P_cn) + (1 - q)·K^-D],

and every conditional the sampler asks for, p(S_n | S_visible) and its depth factors, is exact.
``ExactModel`` returns those conditionals through the interface drr/sampling/decode.py uses of a
Contextual RQ-Transformer (``context``, ``depth_step``, ``depth_logits``, ``code_emb``,
``null_condition``, ``config``), so the unmodified sampler runs on it:

- at one position a step (T_draft = N, no revise pass, temperature 1) Draft-and-Revise samples p
  exactly (it is the chain rule in a random order), so its samples' mean exact NLL is the entropy
  H(p) and their posterior component frequencies are π, within a few standard errors; the same
  sampler at T_draft = 1 (every position at once from its marginal) misses both by far, which shows
  the checks can fail;
- drafts in two steps are far from p, and revise passes (block Gibbs steps with exact
  conditionals) bring the samples' mean exact NLL back towards H(p);
- small Contextual and AR RQ-Transformers trained for a few hundred steps on samples of p approach
  it: their held-out chain-rule NLL (drr/transformer/likelihood.py) and their samples' exact NLL lie
  much closer to H(p) than a uniform model's.

Counting the exact model's context calls also pins the sampler's cost: T_draft + M·T_revise
spatial forwards a sample, linear in T_draft (what the paper's Table 4 times rest on).

The samples' mean exact NLL is a cross-entropy E_q[-log p(S)]: it equals H(p) when q = p, and a
sampler with incoherent maps (low p) gives more. It can also fall below H(p) when q concentrates on
likely maps (a low temperature), so every run here samples at temperature 1.
"""

import functools
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from drr.sampling.ar import ARSettings, sample_raster
from drr.sampling.decode import DecodeSettings, PhaseSettings, draft_and_revise, sample_seeds
from drr.transformer.build import build_transformer
from drr.transformer.likelihood import random_order_nll, raster_nll
from drr.transformer.model import TransformerConfig, masked_nll, sample_masks

H_, W_, D, K = 4, 4, 2, 8    # code maps 4x4x2, K = 8
N = H_ * W_
Q = 0.75                     # probability a position keeps its prototype's stack
PI = np.array([0.4, 0.3, 0.2, 0.1])
C = len(PI)


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the 2-core machine is shared."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


class Mixture:
    """The mixture of prototype code maps, with exact sampling and log-likelihood."""

    def __init__(self, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.prototypes = rng.integers(0, K, (C, N, D))
        self.log_keep = np.log(Q + (1 - Q) * K ** -D)  # the position has the prototype's stack
        self.log_other = np.log((1 - Q) * K ** -D)     # any other stack

    def sample(self, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
        """n code maps (n, N, D) and their components (n,)."""
        rng = np.random.default_rng(seed)
        comp = rng.choice(C, size=n, p=PI)
        keep = rng.random((n, N)) < Q
        codes = np.where(keep[..., None], self.prototypes[comp], rng.integers(0, K, (n, N, D)))
        return codes, comp

    def log_joint(self, codes: np.ndarray) -> np.ndarray:
        """log π_c + log p(S | c): (n, C)."""
        match = (codes[:, None] == self.prototypes[None]).all(-1)  # (n, C, N)
        return np.log(PI) + np.where(match, self.log_keep, self.log_other).sum(-1)

    def nll(self, codes) -> np.ndarray:
        """-log p(S) in nats per map, (n,)."""
        lj = self.log_joint(np.asarray(codes))
        m = lj.max(1, keepdims=True)
        return -(m[:, 0] + np.log(np.exp(lj - m).sum(1)))

    def responsibilities(self, codes) -> np.ndarray:
        """p(c | S): (n, C). Their mean under p is π exactly."""
        lj = self.log_joint(np.asarray(codes))
        w = np.exp(lj - lj.max(1, keepdims=True))
        return w / w.sum(1, keepdims=True)


MIX = Mixture()
UNIFORM_NLL = N * D * np.log(K)  # a uniform model's NLL of any map


@functools.cache
def entropy() -> tuple[float, float]:
    """H(p) = E_p[-log p(S)] by Monte Carlo over 200,000 exact samples, and its standard error
    (~0.02 nats)."""
    nll = np.concatenate([MIX.nll(MIX.sample(20_000, seed=100 + i)[0]) for i in range(10)])
    return float(nll.mean()), float(nll.std() / np.sqrt(len(nll)))


@dataclass
class ExactConfig:
    """The attributes of TransformerConfig that the sampler and the likelihood read."""

    num_positions: int = N
    depth: int = D
    codebook_size: int = K
    embed_dim: int = K
    kind: str = "contextual"
    cond_type: str = "none"


class ExactModel(nn.Module):
    """The mixture's exact conditionals behind a Contextual RQ-Transformer's interface.

    ``context`` returns, at every position n, h_n = (log p(c | S_visible) for each c, n): the
    posterior over components given the unmasked positions (masked ones marginalise out, being
    independent given c) and the position index. The depth factors then follow from
    p(S_n,<=d | c) = q·1(S_n,<=d = P_cn,<=d) + (1 - q)·K^-(d+1). Code embeddings are one-hot, so
    the sampler's running sum of a stack's code embeddings changes by e(S_n,d-1) at depth d;
    ``depth_step`` keeps the codes read so far on the depth cache the sampler hands it.
    """

    def __init__(self, mixture: Mixture):
        super().__init__()
        self.config = ExactConfig()
        self.has_null_condition = True
        self.register_buffer("code_emb", torch.eye(K, dtype=torch.float64))
        self.register_buffer("prototypes", torch.from_numpy(mixture.prototypes))  # (C, N, D)
        self.log_keep, self.log_other = float(mixture.log_keep), float(mixture.log_other)
        self.forward_rows: list[int] = []   # rows of each context call, in order

    def null_condition(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(cond)  # unconditional: guidance changes nothing

    def context(self, codes: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor):
        self.forward_rows.append(len(codes))  # one spatial forward of a real model, for counting
        match = (codes[:, None] == self.prototypes[None]).all(-1)  # (B, C, N)
        keep, other = (torch.tensor(v, dtype=torch.float64) for v in (self.log_keep, self.log_other))
        ll = torch.where(match, keep, other) * (~mask)[:, None]      # visible positions only
        logw = torch.log(torch.as_tensor(PI)) + ll.sum(-1)
        logw = logw - logw.logsumexp(-1, keepdim=True)                 # (B, C)
        b = len(codes)
        pos = torch.arange(N, dtype=torch.float64).expand(b, N)[..., None]
        h = torch.cat([logw[:, None].expand(b, N, C), pos], dim=-1)   # (B, N, C + 1)
        return h, h[:, :1]

    def _logits(self, h: torch.Tensor, prefix: torch.Tensor) -> torch.Tensor:
        """log p(S_nd = k | S_n,<d = prefix, S_visible) up to a constant, (M, K); d = prefix width."""
        d = prefix.shape[1]
        w, n = h[:, :C].exp(), h[:, C].long()
        proto = self.prototypes[:, n].transpose(0, 1)                 # (M, C, D)
        same = (proto[:, :, :d] == prefix[:, None]).all(-1)           # (M, C)
        mass = (w * same * Q)[..., None] * F.one_hot(proto[:, :, d], K)  # (M, C, K)
        return torch.log(mass.sum(1) + (1 - Q) * K ** -(d + 1))

    def depth_step(self, cache, h: torch.Tensor, partial: torch.Tensor, d: int) -> torch.Tensor:
        if d == 0:
            cache.prefix = torch.zeros(len(h), 0, dtype=torch.long, device=h.device)
        else:
            code = (partial - cache.partial).argmax(-1)               # e(S_n,d-1) is one-hot
            cache.prefix = torch.cat([cache.prefix, code[:, None]], dim=1)
        cache.partial = partial.clone()
        return self._logits(h, cache.prefix)

    def depth_logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        steps = min(codes.shape[1] + 1, D)
        return torch.stack([self._logits(h, codes[:, :d]) for d in range(steps)], dim=1)


def plain(t_draft: int, t_revise: int = 2, m: int = 0) -> DecodeSettings:
    """Temperature 1, no guidance, no truncation, in both phases."""
    return DecodeSettings(t_draft=t_draft, t_revise=t_revise, revise_iterations=m,
                          draft=PhaseSettings(), revise=PhaseSettings())


def draw(model, settings: DecodeSettings, n: int, first: int = 0):
    """n samples (revised, draft) as numpy, seeds from sample indices first..first+n-1."""
    cond = torch.zeros(n, 1, dtype=torch.long)
    codes, draft = draft_and_revise(model, cond, settings, sample_seeds(0, range(first, first + n)),
                                    return_draft=True)
    return codes.numpy(), draft.numpy()


def within(nlls: np.ndarray) -> tuple[float, float]:
    """(mean exact NLL of the samples minus H(p), its standard error)."""
    h, h_se = entropy()
    return float(nlls.mean() - h), float(np.hypot(nlls.std() / np.sqrt(len(nlls)), h_se))


def frequency_z(codes: np.ndarray) -> np.ndarray:
    """z-scores of the mean posterior component frequencies against π, (C,)."""
    r = MIX.responsibilities(codes)
    return (r.mean(0) - PI) / (r.std(0) / np.sqrt(len(r)))


# -- the exact model -------------------------------------------------------------------------------

def test_the_exact_model_is_a_consistent_joint_distribution():
    """Its chain rule in any order is the mixture's exact log-likelihood (no spread across orders),
    so the model and the likelihood code agree on what p is."""
    codes = torch.from_numpy(MIX.sample(50, seed=3)[0])
    nll = random_order_nll(ExactModel(MIX), codes, torch.zeros(50, 1, dtype=torch.long),
                           orders=3, seed=0)
    want = torch.from_numpy(MIX.nll(codes.numpy()))
    torch.testing.assert_close(nll, want[:, None].expand(50, 3), rtol=1e-9, atol=1e-9)


def test_one_position_a_step_reproduces_the_entropy_and_the_component_frequencies():
    model = ExactModel(MIX)
    codes, _ = draw(model, plain(t_draft=N), 2000)
    excess, se = within(MIX.nll(codes))
    assert abs(excess) < 4 * se, (excess, se)                # se ~0.2 nats; H(p) ~26.5 nats
    assert np.abs(frequency_z(codes)).max() < 4
    # the same checks see a sampler that is wrong: all positions at once, from their marginals
    wrong, _ = draw(model, plain(t_draft=1), 2000)
    excess_wrong, se_wrong = within(MIX.nll(wrong))
    assert excess_wrong > 20 * se_wrong and excess_wrong > 5.0, (excess_wrong, se_wrong)


def test_revising_improves_drafts_made_in_two_steps():
    """T_draft 2: half the positions from their marginals, then the other half given them; each
    revise pass (T_revise 2, exact conditionals, temperature 1) re-samples half given the rest."""
    revised, drafts = draw(ExactModel(MIX), plain(t_draft=2, t_revise=2, m=3), 2000)
    nll_draft, nll_revised = MIX.nll(drafts), MIX.nll(revised)
    gain = nll_draft - nll_revised                           # paired, per sample
    assert gain.mean() > 5 * gain.std() / np.sqrt(len(gain)), gain.mean()
    draft_excess, _ = within(nll_draft)
    revised_excess, _ = within(nll_revised)
    assert draft_excess > 5.0                                # measured: ~16 nats
    assert abs(revised_excess) < draft_excess / 3, (revised_excess, draft_excess)


def test_sampling_cost_is_linear_in_t_draft():
    """What Table 4's times rest on, as a property of the code: a sample costs T_draft + M·T_revise
    spatial forwards, each over B rows, or 2B in a guided phase (conditional and null rows)."""
    model = ExactModel(MIX)
    b, m, t_revise = 3, 2, 2
    guided = PhaseSettings(temperature=0.8, guidance=1.8)
    for strategy in ("random", "top-c"):
        for t_draft in (2, 4, 8, 16):
            model.forward_rows.clear()
            settings = DecodeSettings(t_draft=t_draft, t_revise=t_revise, revise_iterations=m,
                                      strategy=strategy, draft=PhaseSettings(), revise=guided)
            draft_and_revise(model, torch.zeros(b, 1, dtype=torch.long), settings,
                             sample_seeds(0, range(b)))
            assert model.forward_rows == [b] * t_draft + [2 * b] * (m * t_revise), (strategy, t_draft)


# -- small trained models --------------------------------------------------------------------------

def train_model(kind: str, steps: int = 300, batch: int = 64, seed: int = 0):
    """A 2+1-block RQ-Transformer (d 64) trained on fresh mixture samples with eq. 11 (masks from
    eq. 10) or, for kind ar, the next-code loss over all positions; AdamW, 30 warm-up steps, cosine
    decay from 6e-3 (at 3e-3 the contextual model ends about 0.5 nats further from H(p))."""
    torch.manual_seed(seed)
    cfg = TransformerConfig(n_spatial=2, n_depth=1, d_model=64, head_dim=16, code_shape=(H_, W_, D),
                            codebook_size=K, embed_dim=8, cond_type="none", kind=kind)
    model = build_transformer(cfg, torch.randn(K, 8))
    opt = torch.optim.AdamW(model.parameters(), lr=6e-3, betas=(0.9, 0.95), weight_decay=1e-4)
    data = torch.from_numpy(MIX.sample(steps * batch, seed=10 + seed)[0]).reshape(steps, batch, N, D)
    gen = torch.Generator().manual_seed(seed)
    cond = torch.zeros(batch, 1, dtype=torch.long)
    model.train()
    for step in range(steps):
        lr = 6e-3 * min(1.0, (step + 1) / 30) * 0.5 * (1 + np.cos(np.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr
        mask = None if kind == "ar" else sample_masks(batch, N, gen)
        loss = masked_nll(model(data[step], mask, cond))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def trained():
    return {"contextual": train_model("contextual"), "ar": train_model("ar")}


@pytest.fixture(scope="module")
def heldout():
    codes = torch.from_numpy(MIX.sample(300, seed=4)[0])
    return codes, torch.zeros(len(codes), 1, dtype=torch.long)


def test_trained_models_likelihood_approaches_the_entropy(trained, heldout):
    """Held-out NLL by the chain rule (random orders for the contextual model, raster for the AR),
    nats per map: a cross-entropy, so at least H(p) up to sampling noise, and much nearer to it
    than a uniform model's N·D·ln K."""
    codes, cond = heldout
    ctx = random_order_nll(trained["contextual"], codes, cond, orders=2, seed=0).mean(1).numpy()
    ar = raster_nll(trained["ar"], codes, cond).numpy()
    exact = MIX.nll(codes.numpy())
    for name, nll in (("contextual", ctx), ("ar", ar)):
        gap = nll - exact                                    # paired with the maps' exact NLL
        # measured (300 steps): contextual ~2.6, AR ~0.3 nats above H(p) ~26.5; uniform 66.5
        assert gap.mean() > -3 * gap.std() / np.sqrt(len(gap)), name
        assert gap.mean() < 0.2 * (UNIFORM_NLL - entropy()[0]), (name, gap.mean())


def hard_frequency_tv(codes: np.ndarray) -> float:
    """Total variation between π and the frequencies of each sample's most likely component."""
    counts = np.bincount(MIX.responsibilities(codes).argmax(1), minlength=C)
    return float(np.abs(counts / len(codes) - PI).sum() / 2)


def test_trained_models_samples_approach_the_entropy_and_the_frequencies(trained):
    """Samples of the trained models, plainly (temperature 1): the contextual model at one position
    a step, the AR model in raster order. Their mean exact NLL lies much nearer to H(p) than a
    uniform sampler's, and their components' frequencies nearer to π."""
    n = 1000
    ctx, _ = draw(trained["contextual"], plain(t_draft=N), n)
    ar = sample_raster(trained["ar"], torch.zeros(n, 1, dtype=torch.long), ARSettings(),
                       sample_seeds(0, range(n))).numpy()
    uniform = np.random.default_rng(5).integers(0, K, (n, N, D))
    uniform_excess, _ = within(MIX.nll(uniform))             # ~59 nats
    uniform_tv = hard_frequency_tv(uniform)                  # ~0.20
    for name, codes in (("contextual", ctx), ("ar", ar)):
        excess, _ = within(MIX.nll(codes))
        # measured (300 steps): contextual ~10, AR ~2 nats
        assert abs(excess) < 0.35 * uniform_excess, (name, excess, uniform_excess)
        # measured: contextual ~0.06, AR ~0.02; the exact sampler ~0.03 at this n
        assert hard_frequency_tv(codes) < 0.5 * uniform_tv, (name, hard_frequency_tv(codes))


def test_revising_improves_a_trained_models_two_step_drafts(trained):
    revised, drafts = draw(trained["contextual"], plain(t_draft=2, t_revise=2, m=3), 1000)
    gain = MIX.nll(drafts) - MIX.nll(revised)                # measured: ~14 nats
    assert gain.mean() > 5 * gain.std() / np.sqrt(len(gain)), gain.mean()
