"""A likelihood both RQ-Transformers share: the negative log-likelihood of whole code maps by the
chain rule, in nats per map.

The AR RQ-Transformer factorises p(S) in raster order, so its NLL is the teacher-forced loss summed
over the N·D codes of a map (``raster_nll``). The Contextual RQ-Transformer has no single order, but
Draft-and-Revise at one position a step (T_draft = N) samples a map by the chain rule in a random
order π: for t = 1..N, S_{π_t} ~ p(S_{π_t} | S_{π_<t}) with the not-yet-generated positions
masked (eq. 4-5, Algorithm 1 with parts of one position). ``random_order_nll`` scores held-out maps
by exactly that factorisation,

    -log q_π(S) = - Σ_t Σ_d log p(S_{π_t,d} | S_{π_t,<d}, S_{\\m_t}),   m_t = positions π_t, ..., π_N,

for several random orders per map. q_π is a normalised distribution over code maps for every π
(tests/test_likelihood.py sums it over all maps of a toy model), so -log q_π(S) is a likelihood in
the same units as the AR model's; a model whose conditionals were consistent would give the same
value in every order, so the spread across orders measures how far the contextual model is from one
joint distribution. The sampler draws from the mixture of the q_π over uniform orders; the mean of
-log q_π(S) over orders bounds that mixture's NLL from above (Jensen). With ``steps`` = T < N the positions are dealt to T parts of the order and each
part is scored given the earlier ones only: the likelihood of a T-step draft with that partition.

Cost: N spatial forwards per (map, order) for the contextual model (a bidirectional transformer
recomputes every context when one more position is revealed), one per map for the AR model. Rows
(map, order) are batched ``batch_size`` at a time; the orders are drawn up front from ``seed``, so
they do not depend on the batch size.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

LIKELIHOOD_STREAM = 3  # SeedSequence domain of the orders (training uses 1, sampling 2)


def random_orders(maps: int, orders: int, n: int, seed: int) -> torch.Tensor:
    """(orders, maps, N) int64 ranks: rank[o, i, n] is the step at which position n of map i is
    generated in order o (a uniform random permutation per (o, i)), drawn from `seed` alone."""
    g = torch.Generator().manual_seed(
        int(np.random.SeedSequence([seed, LIKELIHOOD_STREAM]).generate_state(1)[0]))
    return torch.rand(orders, maps, n, generator=g).argsort(-1).argsort(-1)


def _stack_log_prob(model, h: torch.Tensor, stacks: torch.Tensor) -> torch.Tensor:
    """Σ_d log p(S_nd | S_n,<d, context) of M stacks (M, D) given their contexts h (M, d_model):
    the depth transformer teacher-forced (eq. 8-9). Float64 (M,)."""
    logits = model.depth_logits(h, stacks).double()  # (M, D, K)
    return logits.log_softmax(-1).gather(-1, stacks[..., None]).squeeze(-1).sum(-1)


def random_order_nll(model, codes: torch.Tensor, cond: torch.Tensor, orders: int, seed: int,
                     steps: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """NLL in nats per map of each code map in `orders` random orders drawn from `seed`:
    (maps, orders) float64. See ``order_nll``."""
    if orders < 1:
        raise ValueError(f"orders {orders}: need at least 1")
    return order_nll(model, codes, cond, random_orders(len(codes), orders, codes.shape[1], seed),
                     steps, batch_size)


@torch.inference_mode()
def order_nll(model, codes: torch.Tensor, cond: torch.Tensor, ranks: torch.Tensor,
              steps: int | None = None, batch_size: int = 256) -> torch.Tensor:
    """NLL in nats per map of each code map in given orders: (maps, orders) float64.

    codes (B, N, D) int64 and cond (B, L) on the model's device; ranks (orders, B, N): the step at
    which each position is generated (a permutation of 0..N-1 per row, as ``random_orders``);
    `model` a Contextual RQ-Transformer (``context`` and ``depth_logits``, as
    drr/transformer/model.py). steps: parts of each order, scored one after another (None: N, one
    position a step, the model's chain rule). Puts the model in eval mode.
    """
    model.eval()
    b, n, _ = codes.shape
    orders = ranks.shape[0]
    if ranks.shape != (orders, b, n):
        raise ValueError(f"ranks of shape {tuple(ranks.shape)} for {b} maps of {n} positions")
    steps = n if steps is None else int(steps)
    if not 1 <= steps <= n:
        raise ValueError(f"steps {steps}: need 1..{n} parts of the {n} positions")
    device = codes.device
    part = (ranks.to(device) * steps) // n  # balanced parts of each order (sizes differ by <= 1)
    part = part.reshape(orders * b, n)
    rows = torch.arange(orders * b, device=device) % b  # row r scores map r % B in order r // B
    total = torch.zeros(orders * b, dtype=torch.float64, device=device)
    for start in range(0, orders * b, batch_size):
        sel = slice(start, start + batch_size)
        c, cc, p = codes[rows[sel]], cond[rows[sel]], part[sel]
        for t in range(steps):
            h, _ = model.context(c, p >= t, cc)  # not yet generated: masked (eq. 4)
            r, pos = (p == t).nonzero(as_tuple=True)
            logp = _stack_log_prob(model, h[r, pos], c[r, pos])
            total[start:start + len(c)].index_add_(0, r, -logp)
    return total.reshape(orders, b).T.cpu()


@torch.inference_mode()
def raster_nll(model, codes: torch.Tensor, cond: torch.Tensor, batch_size: int = 256
               ) -> torch.Tensor:
    """NLL in nats per map of each code map under the AR RQ-Transformer's raster-order chain rule:
    the teacher-forced loss summed over the N·D codes (B,) float64. Puts the model in eval mode."""
    model.eval()
    out = []
    for start in range(0, len(codes), batch_size):
        c = codes[start:start + batch_size]
        o = model(c, None, cond[start:start + batch_size])
        nll = F.cross_entropy(o["logits"].double().flatten(0, 1), o["targets"].flatten(),
                              reduction="none")
        out.append(nll.reshape(len(c), -1).sum(1))  # scored_outputs keeps (map, position) order
    return torch.cat(out).cpu() if out else torch.zeros(0, dtype=torch.float64)


def chain_rule_summary(model, codes: torch.Tensor, cond: torch.Tensor, orders: int, seed: int,
                       batch_size: int = 256) -> dict:
    """The shared likelihood of one model on held-out maps, for its report (nats per map).

    Contextual: random orders, one position a step. `nats_per_map` is the mean over maps and
    orders, `per_order` the mean over maps of each order, `order_spread` the root mean square over
    maps of each map's standard deviation across orders (0 for one order). AR: raster order (one
    order; `orders` is ignored). `se_over_maps` is the standard error of the mean over maps of each
    map's order-averaged NLL; `uniform` is N·D·ln K, a model that knows nothing.
    """
    c = model.config
    maps = len(codes)
    if c.kind == "ar":
        nll = raster_nll(model, codes, cond, batch_size)[:, None]
        order = "raster"
    else:
        nll = random_order_nll(model, codes, cond, orders, seed, batch_size=batch_size)
        order = "random"
    per_map = nll.mean(1)
    k = nll.shape[1]
    return {
        "order": order,
        "maps": maps,
        "orders": k,
        "nats_per_map": float(per_map.mean()) if maps else None,
        "se_over_maps": float(per_map.std(unbiased=True) / math.sqrt(maps)) if maps > 1 else None,
        "per_order": [float(v) for v in nll.mean(0)] if maps else [],
        "order_spread": float(nll.var(1, unbiased=True).mean().sqrt()) if k > 1 and maps else 0.0,
        "uniform": c.num_positions * c.depth * math.log(c.codebook_size),
    }
