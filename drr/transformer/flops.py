"""Analytic training FLOPs of both RQ-Transformers (drr/transformer/model.py, drr/transformer/ar.py):
the count of the MFU of benchmarks/train_bench.py and the x-axis of the FID-against-compute figure
(drr.reports.fid_compute).

Counted per training sample (one code map), 2 FLOPs per multiply-add of every matrix product:

- a block of width d over t tokens: (4 + 2·mlp_ratio)·d² multiply-adds a token (query, key, value
  and output projections, the MLP), and the attention scores QKᵀ and the weighted values, 2·t·s·d
  multiply-adds over a sequence of s tokens. Attention is counted in full, also where it is causal
  (the depth transformers, the AR spatial transformer), as torch's FLOP counter counts
  scaled_dot_product_attention;
- the spatial transformer over its sequence, ``input_mlp`` (n_z → d), the depth transformer over
  the D depths of every scored position, ``head_mlp`` (n_z → d) on the D − 1 partial sums of each
  scored position, ``classifier`` (d → K) on its D depths, and for a text condition
  ``cond_classifier`` (d → vocabulary) on the condition tokens;
- a training step is 3 forwards (the backward pass twice the forward), the usual convention.

Left out: embeddings looked up, layer norms, activations, softmax, the loss and the optimizer,
all linear in the sizes with small constants.

The two kinds differ as drr/transformer/ar.py says:

- contextual: the spatial transformer reads L_cond + N tokens (masked positions as e_[MASK]);
  ``input_mlp`` projects the sum of each stack's D embeddings once (N tokens); the depth
  transformer runs on the masked positions only, E|m| of them for masks drawn by eq. 10
  (``expected_masked``);
- AR: the spatial transformer reads L_cond + N − 1 tokens (the last stack is never read);
  ``input_mlp`` projects each of the D embeddings of the N − 1 stacks read; every position is
  scored (N), with no masks.
"""

from __future__ import annotations

import math

from drr.transformer.model import TransformerConfig


def expected_masked(n: int) -> float:
    """E|m| of eq. 10 (drr.transformer.model.sample_masks): |m| = ceil(cos(πr/2)·N), r ~ U[0, 1].
    P(|m| ≥ k) = P(cos(πr/2) > (k−1)/N) = (2/π)·arccos((k−1)/N), summed over k = 1..N; 2N/π is
    its limit for large N (41.2 against 40.7 at N = 64)."""
    return 2 / math.pi * sum(math.acos(j / n) for j in range(n))


def _block(c: TransformerConfig, tokens: float, seq: float) -> float:
    """Forward FLOPs of one block over `tokens` tokens attending to `seq` tokens each."""
    d = c.d_model
    return 2 * tokens * (4 + 2 * c.mlp_ratio) * d * d + 2 * 2 * tokens * seq * d


def scored_positions(c: TransformerConfig) -> float:
    """Positions per code map whose D codes a training step scores (the depth transformer's
    positions): E|m| for the contextual model, all N for the AR model."""
    return float(c.num_positions) if c.kind == "ar" else expected_masked(c.num_positions)


def forward_flops_per_sample(c: TransformerConfig, scored: float | None = None) -> float:
    """FLOPs of one training forward of one code map (teacher forcing, all D depths scored), with
    `scored` positions in place of ``scored_positions(c)`` where given (a fixed mask)."""
    d, lc, n, depth = c.d_model, c.cond_length, c.num_positions, c.depth
    if c.kind == "ar":
        seq = lc + n - 1
        inputs = 2 * (n - 1) * depth * c.embed_dim * d           # input_mlp on every embedding
    else:
        seq = lc + n
        inputs = 2 * n * c.embed_dim * d                         # input_mlp on each stack's sum
    m = scored_positions(c) if scored is None else scored
    spatial = c.n_spatial * _block(c, seq, seq)
    depth_stack = c.n_depth * _block(c, m * depth, depth)
    heads = 2 * m * (depth - 1) * c.embed_dim * d + 2 * m * depth * d * c.codebook_size
    text = 2 * lc * d * c.vocab_size if c.cond_type == "text" else 0
    return spatial + inputs + depth_stack + heads + text


def train_flops_per_sample(c: TransformerConfig) -> float:
    """FLOPs of one code map's share of a training step: 3 forwards (forward and backward)."""
    return 3 * forward_flops_per_sample(c)


def train_flops(c: TransformerConfig, steps: int, batch_size: int) -> float:
    """FLOPs of `steps` training steps of `batch_size` code maps each."""
    return steps * batch_size * train_flops_per_sample(c)
