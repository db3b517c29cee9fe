"""Contextual RQ-Transformer (paper §3.2, eq. 4-9, App. A.2).

A code map S in [K]^{H x W x D} is read as N = H·W code stacks in raster order, S_n in [K]^D.

* Bidirectional spatial transformer (``body_transformer``, N_spatial blocks): input u_n of eq. 6,
  the sum of the D code embeddings at an unmasked position or the mask embedding at a masked one,
  projected to d_model by ``input_mlp``, plus PE_N(n); condition tokens (a class token, or 32 text
  tokens) are prepended. Every position attends to every other: its outputs h_n are contexts.
* Depth transformer (``head_transformer``, N_depth causal blocks), run only on the positions whose
  codes are predicted: v_n1 = PE_D(1) + h_n and v_nd = PE_D(d) + head_mlp(sum_{d'<d} e(S_nd'))
  (eq. 8), then ``classifier`` (LayerNorm + Linear) gives the logits p_nd of eq. 9.

Code embeddings e(k) are the RQ-VAE codebook (frozen, kept as a buffer so a checkpoint is
self-contained), as in the official RQ-Transformer whose key names this module follows
(``input_mlp``, ``head_mlp``, ``pos_emb_*``, ``cond_emb``, ``body_transformer.blocks.i.attn.query``...).

Conditions and classifier-free guidance: ``cond_emb`` has one extra row, the learned null condition;
``null_condition(cond)`` replaces a condition by it. Text conditions are causal among themselves and
predict their next token through ``cond_classifier`` (an auxiliary loss, as the official CC-3M
RQ-Transformer has); image positions attend to all text tokens.

The autoregressive RQ-Transformer (CVPR 2022, drr/transformer/ar.py) is built from the same parts
(``RQTransformerBase``: embeddings, the two block stacks, classifiers, conditions, the depth
transformer). The two models differ only in how the spatial transformer reads the code stacks:
the contextual one masks positions and attends bidirectionally; the AR one shifts the input by one
behind the condition tokens and attends causally, and so is sampled in raster order with a
key/value cache (``KVCache``) instead of by Draft-and-Revise.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F

from drr.core.errors import DrrError

KINDS = ("contextual", "ar")


@dataclass
class TransformerConfig:
    """Sizes of a Contextual RQ-Transformer. Code shape, K and n_z come from its tokenizer."""

    n_spatial: int                     # bidirectional spatial blocks
    n_depth: int                       # causal depth blocks
    d_model: int
    code_shape: tuple[int, int, int]   # H, W, D
    codebook_size: int                 # K
    embed_dim: int                     # n_z of the RQ-VAE code embeddings
    head_dim: int = 64
    cond_type: str = "class"           # class | text | none
    num_classes: int = 1000            # class conditions (cond_type class)
    vocab_size: int = 16384            # text token ids (cond_type text), padding id 0 included
    text_length: int = 32              # text tokens per caption (cond_type text)
    dropout: float = 0.0
    mlp_ratio: int = field(default=4)
    kind: str = "contextual"           # contextual (this module) | ar (drr/transformer/ar.py)

    def __post_init__(self):
        self.code_shape = tuple(int(s) for s in self.code_shape)
        if self.kind not in KINDS:
            raise DrrError(f"transformer.model.kind: {self.kind!r} is not one of {', '.join(KINDS)}")
        if self.d_model % self.head_dim:
            raise DrrError(f"transformer d_model {self.d_model} is not a multiple of head_dim "
                           f"{self.head_dim}")
        if self.cond_type not in ("class", "text", "none"):
            raise DrrError(f"transformer cond type {self.cond_type!r} is not class, text or none")

    @property
    def num_positions(self) -> int:
        return self.code_shape[0] * self.code_shape[1]

    @property
    def depth(self) -> int:
        return self.code_shape[2]

    @property
    def cond_length(self) -> int:
        return self.text_length if self.cond_type == "text" else 1

    @property
    def cond_vocab(self) -> int:
        """Rows of cond_emb without the null row."""
        return {"class": self.num_classes, "text": self.vocab_size, "none": 1}[self.cond_type]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_experiment(cls, cfg: dict) -> "TransformerConfig":
        """The model config of a resolved experiment config (transformer + tokenizer sections)."""
        m, tok = cfg["transformer"]["model"], cfg["tokenizer"]["model"]
        return cls(n_spatial=m["n_spatial"], n_depth=m["n_depth"], d_model=m["d_model"],
                   head_dim=m["head_dim"], code_shape=tuple(tok["code_shape"]),
                   codebook_size=tok["codebook_size"], embed_dim=tok["embed_dim"],
                   cond_type=m["cond"]["type"], num_classes=m["cond"]["num_classes"],
                   vocab_size=m["cond"]["vocab_size"], text_length=m["cond"]["length"],
                   dropout=m["dropout"], kind=m.get("kind", "contextual"))


class KVCache:
    """Keys and values of the tokens a ``Stack`` has already read, for incremental decoding.

    Every block's keys and values (B, heads, t, head_dim) are appended to a buffer preallocated at
    the first write for `max_len` tokens; `length` tokens are filled. A ``Stack`` called with a
    cache reads only the new tokens and attends to the cached ones as well, then advances `length`.
    """

    def __init__(self, max_len: int):
        self.max_len = max_len
        self.length = 0
        self.keys: dict[int, torch.Tensor] = {}
        self.values: dict[int, torch.Tensor] = {}

    def append(self, layer: int, k: torch.Tensor, v: torch.Tensor
               ) -> tuple[torch.Tensor, torch.Tensor]:
        """Store the new keys/values of block `layer`; return all keys/values so far."""
        end = self.length + k.shape[2]
        if end > self.max_len:
            raise ValueError(f"key/value cache of {self.max_len} tokens cannot take {end}")
        if layer not in self.keys:
            shape = (*k.shape[:2], self.max_len, k.shape[3])
            self.keys[layer], self.values[layer] = k.new_empty(shape), v.new_empty(shape)
        keys, values = self.keys[layer], self.values[layer]
        keys[:, :, self.length:end] = k
        values[:, :, self.length:end] = v
        return keys[:, :, :end], values[:, :, :end]


class SelfAttention(nn.Module):
    def __init__(self, d: int, head_dim: int, dropout: float):
        super().__init__()
        self.heads = d // head_dim
        self.query, self.key, self.value = nn.Linear(d, d), nn.Linear(d, d), nn.Linear(d, d)
        self.proj = nn.Linear(d, d)
        self.dropout = dropout

    def forward(self, x: torch.Tensor, causal: bool = False,
                attn_mask: torch.Tensor | None = None, cache: KVCache | None = None,
                layer: int = 0) -> torch.Tensor:
        b, t, d = x.shape

        def heads(y):
            return y.view(b, t, self.heads, d // self.heads).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        if cache is not None:
            if attn_mask is not None:
                raise ValueError("a key/value cache takes causal attention, not an attention mask")
            past = cache.length
            k, v = cache.append(layer, k, v)
            if causal and t > 1:  # new token i sees the cached ones and new ones up to i
                attn_mask = torch.ones(t, past + t, dtype=torch.bool, device=x.device).tril(past)
            causal = False  # a single new token sees everything before it
        y = F.scaled_dot_product_attention(
            q, k, v, attn_mask=attn_mask, is_causal=causal,
            dropout_p=self.dropout if self.training else 0.0)
        return self.proj(y.transpose(1, 2).reshape(b, t, d))


class Block(nn.Module):
    """Pre-LN transformer block with the official RQ-Transformer's key names."""

    def __init__(self, d: int, head_dim: int, dropout: float, mlp_ratio: int = 4):
        super().__init__()
        self.ln1, self.ln2 = nn.LayerNorm(d), nn.LayerNorm(d)
        self.attn = SelfAttention(d, head_dim, dropout)
        self.mlp = nn.Sequential(nn.Linear(d, mlp_ratio * d), nn.GELU(), nn.Linear(mlp_ratio * d, d),
                                 nn.Dropout(dropout))

    def forward(self, x, causal=False, attn_mask=None, cache=None, layer=0):
        x = x + self.attn(self.ln1(x), causal=causal, attn_mask=attn_mask, cache=cache, layer=layer)
        return x + self.mlp(self.ln2(x))


class Stack(nn.Module):
    def __init__(self, n: int, d: int, head_dim: int, dropout: float, mlp_ratio: int):
        super().__init__()
        self.blocks = nn.ModuleList(Block(d, head_dim, dropout, mlp_ratio) for _ in range(n))

    def forward(self, x, causal=False, attn_mask=None, cache: KVCache | None = None):
        """x (B, t, d). With a cache, x holds only the new tokens (after `cache.length` cached
        ones), and the cache is extended by them."""
        for i, block in enumerate(self.blocks):
            x = block(x, causal=causal, attn_mask=attn_mask, cache=cache, layer=i)
        if cache is not None:
            cache.length += x.shape[1]
        return x


class Classifier(nn.Module):
    def __init__(self, d: int, n_out: int):
        super().__init__()
        self.layer_norm = nn.LayerNorm(d)
        self.linear = nn.Linear(d, n_out)

    def forward(self, x):
        return self.linear(self.layer_norm(x))


class RQTransformerBase(nn.Module):
    """The parts both RQ-Transformers share, with the official key names: the frozen code
    embeddings, condition embeddings (plus the null row), positional embeddings, ``input_mlp``,
    ``head_mlp``, the spatial (``body_transformer``) and depth (``head_transformer``) block stacks,
    ``classifier`` and ``cond_classifier``; conditions, and the depth transformer of eq. 8-9.

    Subclasses define ``context`` (how the spatial transformer reads the code stacks: its input and
    its attention mask) and ``forward``. ``has_null_condition`` is False for a model imported from an
    official checkpoint, whose null row was never trained (classifier-free guidance is refused).
    """

    uses_mask_embedding = False  # the contextual model's e_[MASK] (eq. 6)

    def __init__(self, config: TransformerConfig, code_embeddings: torch.Tensor | None = None):
        super().__init__()
        c = self.config = config
        d, n, depth = c.d_model, c.num_positions, c.depth
        self.has_null_condition = True
        self.register_buffer("code_emb", torch.zeros(c.codebook_size, c.embed_dim))
        if code_embeddings is not None:
            self.set_code_embeddings(code_embeddings)
        self.mask_emb = nn.Parameter(torch.zeros(c.embed_dim)) if self.uses_mask_embedding else None
        self.pos_emb_cond = nn.Parameter(torch.zeros(1, c.cond_length, d))
        self.pos_emb_hw = nn.Parameter(torch.zeros(1, n, d))
        self.pos_emb_d = nn.Parameter(torch.zeros(1, depth, d))
        self.cond_emb = nn.Embedding(c.cond_vocab + 1, d)  # last row: the null condition
        self.input_mlp = nn.Linear(c.embed_dim, d)
        self.head_mlp = nn.Linear(c.embed_dim, d)
        self.body_transformer = Stack(c.n_spatial, d, c.head_dim, c.dropout, c.mlp_ratio)
        self.head_transformer = Stack(c.n_depth, d, c.head_dim, c.dropout, c.mlp_ratio)
        self.classifier = Classifier(d, c.codebook_size)
        self.cond_classifier = Classifier(d, c.vocab_size) if c.cond_type == "text" else None
        self.drop = nn.Dropout(c.dropout)
        self.apply(self._init_weights)
        for p in (self.mask_emb, self.pos_emb_cond, self.pos_emb_hw, self.pos_emb_d):
            if p is not None:
                nn.init.normal_(p, std=0.02)

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, std=0.02)
            if getattr(module, "bias", None) is not None:
                nn.init.zeros_(module.bias)

    def set_code_embeddings(self, weight: torch.Tensor) -> None:
        """Copy the tokenizer's codebook (K rows of n_z; a padding row beyond K is dropped)."""
        k, nz = self.code_emb.shape
        if weight.shape[0] < k or weight.shape[1] != nz:
            raise DrrError(f"tokenizer codebook has shape {tuple(weight.shape)}, the transformer "
                           f"expects at least ({k}, {nz})")
        with torch.no_grad():
            self.code_emb.copy_(weight[:k])

    # -- conditions -------------------------------------------------------------------------
    @property
    def null_id(self) -> int:
        return self.config.cond_vocab

    def null_condition(self, cond: torch.Tensor) -> torch.Tensor:
        return torch.full_like(cond, self.null_id)

    def drop_condition(self, cond: torch.Tensor, p: float,
                       generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Replace each row's condition by the null one with probability p (for CFG training)."""
        if p <= 0 or self.config.cond_type == "none":
            return cond, torch.zeros(len(cond), dtype=torch.bool, device=cond.device)
        drop = torch.rand(len(cond), generator=generator, device="cpu").to(cond.device) < p
        return torch.where(drop[:, None], self.null_condition(cond), cond), drop

    def check_inputs(self, codes: torch.Tensor | None, cond: torch.Tensor) -> None:
        c = self.config
        if codes is not None and codes.shape[1:] != (c.num_positions, c.depth):
            raise DrrError(f"codes of shape {tuple(codes.shape)}, the model expects "
                           f"(B, {c.num_positions}, {c.depth})")
        if cond.shape[1] != c.cond_length:
            raise DrrError(f"condition of length {cond.shape[1]}, the model expects {c.cond_length}")

    def condition_tokens(self, cond: torch.Tensor) -> torch.Tensor:
        """The condition's input tokens (B, L, d): embedding + PE."""
        return self.cond_emb(cond) + self.pos_emb_cond

    # -- the depth transformer (eq. 8-9), the same in both models ---------------------------
    def embed_stacks(self, codes: torch.Tensor) -> torch.Tensor:
        """sum_d e(S_nd): (..., D) codes -> (..., n_z)."""
        return F.embedding(codes, self.code_emb).sum(-2)

    def depth_logits(self, h: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
        """Eq. 8-9 for M selected positions: h (M, d), codes (M, D') with D' < D given codes
        (teacher forcing: pass all D to get every depth) -> logits (M, D'', K), D'' = min(D'+1, D)."""
        c = self.config
        steps = min(codes.shape[1] + 1, c.depth)
        partial = F.embedding(codes[:, :steps - 1], self.code_emb).cumsum(1)  # sum_{d'<d} e(S_nd')
        v = torch.cat([h[:, None], self.head_mlp(partial)], dim=1) + self.pos_emb_d[:, :steps]
        return self.classifier(self.head_transformer(v, causal=True))

    def scored_outputs(self, h: torch.Tensor, hc: torch.Tensor, codes: torch.Tensor,
                       mask: torch.Tensor) -> dict:
        """Teacher-forced logits at the positions in `mask` (the depth transformer runs on those
        only), from the spatial outputs `h` and the condition outputs `hc` of `context`."""
        batch_index, position = mask.nonzero(as_tuple=True)
        targets = codes[batch_index, position]
        logits = self.depth_logits(h[batch_index, position], targets)
        cond_logits = self.cond_classifier(hc) if self.cond_classifier is not None else None
        return {"logits": logits, "targets": targets, "batch_index": batch_index,
                "position": position, "cond_logits": cond_logits}

    def depth_input(self, h: torch.Tensor, partial: torch.Tensor, d: int) -> torch.Tensor:
        """v_nd of eq. 8 for one depth d (0-based), (M, 1, d_model): h (M, d_model) at d = 0,
        else head_mlp(partial), partial = sum_{d'<d} e(S_nd') (M, n_z). For cached decoding."""
        v = h if d == 0 else self.head_mlp(partial)
        return (v + self.pos_emb_d[0, d])[:, None]

    def depth_step(self, cache: KVCache, h: torch.Tensor, partial: torch.Tensor, d: int
                   ) -> torch.Tensor:
        """Logits (M, K) of depth d (0-based) at M positions, given their context h (M, d_model)
        and partial = sum_{d'<d} e(S_nd') (M, n_z); `cache` is a KVCache(D) of the depth
        transformer, new for each set of positions and fed depths 0, 1, ... in order. Equal to
        ``depth_logits`` at depth d up to float rounding, with one token a step instead of d + 1."""
        out = self.head_transformer(self.depth_input(h, partial, d), causal=True, cache=cache)
        return self.classifier(out[:, -1])


class ContextualRQTransformer(RQTransformerBase):
    """p_theta(S_n | S_masked) for masked positions n (eq. 5), as spatial context + depth AR.

    Shapes: codes (B, N, D) int64 in [0, K); mask (B, N) bool, True = masked (m_n = 1);
    cond (B, L_cond) int64 (class label (B, 1), text ids (B, 32), zeros for unconditional).
    """

    uses_mask_embedding = True

    def _spatial_mask(self, device) -> torch.Tensor | None:
        """Attention mask (True = may attend): text tokens causal among themselves, images see all."""
        if self.config.cond_type != "text":
            return None
        lc, n = self.config.cond_length, self.config.num_positions
        allow = torch.ones(lc + n, lc + n, dtype=torch.bool, device=device)
        allow[:lc, :lc] = torch.ones(lc, lc, dtype=torch.bool, device=device).tril()
        allow[:lc, lc:] = False
        return allow

    def context(self, codes: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Eq. 6-7: contexts h (B, N, d) of every position, and the condition outputs (B, L, d)."""
        c = self.config
        self.check_inputs(codes, cond)
        z = torch.where(mask[..., None], self.mask_emb.to(self.code_emb.dtype),
                        self.embed_stacks(codes.clamp(0, c.codebook_size - 1)))
        u = self.input_mlp(z) + self.pos_emb_hw
        x = torch.cat([self.condition_tokens(cond), u], dim=1)
        x = self.body_transformer(self.drop(x), attn_mask=self._spatial_mask(x.device))
        return x[:, c.cond_length:], x[:, :c.cond_length]

    def forward(self, codes: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor) -> dict:
        """Teacher-forced logits at the masked positions only (the depth transformer runs on those).

        Returns {'logits': (M, D, K), 'targets': (M, D), 'batch_index': (M,), 'position': (M,),
        'cond_logits': (B, L, V) or None}, M = mask.sum().
        """
        h, hc = self.context(codes, mask, cond)
        return self.scored_outputs(h, hc, codes, mask)



def _full_precision(x: torch.Tensor) -> torch.Tensor:
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def masked_nll(out: dict) -> torch.Tensor:
    """Eq. 11: mean negative log-likelihood of the masked code stacks (over masked positions and
    depths; unmasked positions are never scored)."""
    logits, targets = _full_precision(out["logits"]), out["targets"]
    return F.cross_entropy(logits.flatten(0, 1), targets.flatten())


def text_targets(cond: torch.Tensor, dropped: torch.Tensor, pad_id: int = 0) -> torch.Tensor:
    """Next-token targets of the caption tokens: -100 where padding or condition dropped."""
    return cond[:, 1:].masked_fill(dropped[:, None] | (cond[:, 1:] == pad_id), -100)


def text_nll(out: dict, cond: torch.Tensor, dropped: torch.Tensor, pad_id: int = 0,
             reduction: str = "mean") -> torch.Tensor:
    """Auxiliary next-text-token loss over real (not padding, not dropped) caption tokens."""
    logits = _full_precision(out["cond_logits"][:, :-1])
    target = text_targets(cond, dropped, pad_id)
    if (target != -100).sum() == 0:
        return logits.sum() * 0.0
    return F.cross_entropy(logits.flatten(0, 1), target.flatten(), ignore_index=-100,
                           reduction=reduction)


def gamma_cosine(r: torch.Tensor) -> torch.Tensor:
    """The mask schedule γ(r) = cos(πr/2): γ(0) = 1, γ(1) = 0, decreasing (§3.2.3)."""
    return torch.cos(0.5 * math.pi * r)


def sample_masks(batch: int, n: int, generator: torch.Generator | None = None,
                 device="cpu") -> torch.Tensor:
    """Eq. 10: r ~ U[0, 1], |m| = ceil(γ(r)·N) (at least 1), positions uniform. (B, N) bool."""
    r = torch.rand(batch, generator=generator)
    count = torch.ceil(gamma_cosine(r) * n).long().clamp(1, n)
    ranks = torch.rand(batch, n, generator=generator).argsort(dim=1).argsort(dim=1)
    return (ranks < count[:, None]).to(device)
