"""The autoregressive RQ-Transformer (Lee et al., CVPR 2022), the paper's baseline (Tables 1, 2, 4;
Figure 1), built from the same parts as the Contextual RQ-Transformer (``RQTransformerBase``).

It models p(S) = prod_n prod_d p(S_nd | S_<n, S_n,<d) over the N = H·W code stacks in raster
order. Against drr/transformer/model.py the differences are exactly three:

1. Input shift: with positions 0..N-1, the spatial transformer reads [condition tokens, u_0, ...,
   u_{N-2}] (the last stack is never read), so the output at the last condition token is the
   context h_0 of stack 0 and the output at stack n is h_{n+1}. There is no [MASK] embedding:
   every input stack is a real one.
2. Attention mask: the spatial transformer is causal over the whole sequence (condition tokens
   included), where the contextual one is bidirectional.
3. Sampler: one position after another in raster order with a key/value cache (``begin`` /
   ``extend`` here, the sampling loop in drr/sampling/ar.py), where the contextual model is
   decoded by Draft-and-Revise.

The depth transformer, ``classifier`` and ``cond_classifier`` are shared code. One detail follows
the official model so that its checkpoints load exactly: the input token of a stack is
sum_d input_mlp(e(S_nd)) (the official model projects each depth's code embedding, then sums),
i.e. input_mlp(sum_d e(S_nd)) + (D-1)·bias, where the contextual model projects the sum once.

Official layout (drr/transformer/official.py): the same key names without ``code_emb`` (the
official model reads the RQ-VAE's codebook at run time) and without the null row of ``cond_emb``
(the official model has no classifier-free guidance). A model trained here does have the null row
(condition dropout, transformer.train.cond_dropout), so guidance is available as an option.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from drr.transformer.model import KVCache, RQTransformerBase


class ARRQTransformer(RQTransformerBase):
    """p_theta(S_nd | S_<n, S_n,<d, cond): causal spatial transformer over the shifted code stacks,
    depth transformer as in the contextual model.

    Shapes: codes (B, N, D) int64 in [0, K); cond (B, L_cond) int64 (class label (B, 1), text ids
    (B, 32), zeros for unconditional).
    """

    uses_mask_embedding = False

    def stack_tokens(self, codes: torch.Tensor, start: int = 0) -> torch.Tensor:
        """Input tokens of the stacks codes (B, t, D) at positions start..start+t-1:
        sum_d input_mlp(e(S_nd)) + PE_N(n), (B, t, d_model)."""
        c = self.config
        t = codes.shape[1]
        e = F.embedding(codes.clamp(0, c.codebook_size - 1), self.code_emb)  # (B, t, D, n_z)
        return self.input_mlp(e).sum(-2) + self.pos_emb_hw[:, start:start + t]

    def context(self, codes: torch.Tensor, cond: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Causal contexts h (B, N, d): h_n depends on the condition and stacks < n only; and the
        outputs at the condition tokens (B, L, d) (the last one is h_0)."""
        c = self.config
        self.check_inputs(codes, cond)
        x = torch.cat([self.condition_tokens(cond), self.stack_tokens(codes[:, :-1])], dim=1)
        x = self.body_transformer(self.drop(x), causal=True)
        lc = c.cond_length
        return x[:, lc - 1:], x[:, :lc]

    def forward(self, codes: torch.Tensor, mask: torch.Tensor | None, cond: torch.Tensor) -> dict:
        """Teacher-forced next-code logits. `mask` (B, N) bool selects the positions to score (the
        input is never masked; training scores all positions: pass all True, or None).

        Returns the contextual model's dict: {'logits': (M, D, K), 'targets': (M, D),
        'batch_index': (M,), 'position': (M,), 'cond_logits': (B, L, V) or None}, M = mask.sum().
        """
        h, hc = self.context(codes, cond)
        if mask is None:
            mask = torch.ones(codes.shape[:2], dtype=torch.bool, device=codes.device)
        return self.scored_outputs(h, hc, codes, mask)

    # -- incremental decoding (raster order, key/value cache) ---------------------------------
    def begin(self, cond: torch.Tensor, prefix: torch.Tensor | None = None
              ) -> tuple[KVCache, torch.Tensor]:
        """Read the condition tokens and the known stacks prefix (B, s, D) (s < N) into a new
        cache in one forward; return (cache, h_s (B, d)), the context of the next position s."""
        c = self.config
        self.check_inputs(None, cond)
        x = self.condition_tokens(cond)
        if prefix is not None and prefix.shape[1] > 0:
            if prefix.shape[1] >= c.num_positions:
                raise ValueError(f"a prefix of {prefix.shape[1]} stacks leaves nothing to predict")
            x = torch.cat([x, self.stack_tokens(prefix, 0)], dim=1)
        cache = KVCache(c.cond_length + c.num_positions - 1)
        out = self.body_transformer(self.drop(x), causal=True, cache=cache)
        return cache, out[:, -1]

    def extend(self, cache: KVCache, stacks: torch.Tensor, start: int) -> torch.Tensor:
        """Read the stacks (B, t, D) at positions start..start+t-1 (those after the cached ones);
        return the contexts h_{start+1..start+t} (B, t, d)."""
        if cache.length != self.config.cond_length + start:
            raise ValueError(f"the cache holds {cache.length} tokens, position {start} needs "
                             f"{self.config.cond_length + start}")
        return self.body_transformer(self.drop(self.stack_tokens(stacks, start)), causal=True,
                                     cache=cache)
