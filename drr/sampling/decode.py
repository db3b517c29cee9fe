"""Draft-and-Revise decoding with a Contextual RQ-Transformer (paper §3.3, Alg. 1-2, eq. 12-14).

* ``balanced_partition``: a partition Π = (m^1, ..., m^T) of the N positions (or of an inpainting
  region) drawn uniformly from the balanced partitions of eq. 12. When T does not divide the count,
  a uniformly random subset of the parts gets one extra position, so sizes differ by at most one.
* ``update`` (Algorithm 1): for t = 1..T, re-sample the code stacks of part t given the others,
  S_n ~ p_θ(S_n | S_\\m^t). Positions never generated yet (the draft starts from S^empty, all
  [MASK]) stay masked in the input until their part comes. Each step is one bidirectional spatial
  forward over all N positions and D depth-transformer steps over the part's positions only, with
  a key/value cache (one new token a depth, as the AR sampler); all samples of the batch and all
  positions of a part go through together.
* ``draft_and_revise`` (Algorithm 2): a draft with T_draft parts from S^empty (eq. 13), then M
  revise passes, each with a fresh partition into T_revise parts (eq. 14). For inpainting (App.
  D.3/D.4) only a given region is partitioned and generated; codes outside it never change.

Sampling settings are per phase (App. A.4: the paper samples plainly in the draft and uses
temperature 0.8 and classifier-free guidance only in the revise phase; §4.4 Table 3 compares
guidance in no phase, the revise phase, both phases). Guidance runs the conditional and the
null-condition rows as one batched forward of 2B rows and mixes the logits as
null + s·(cond − null); then temperature, top-k and top-p (nucleus) filtering apply, in that order.

Confidence-based UPDATE (``strategy`` top-c / top-c-50; draft phase only, as App. C and its
Table 3 compare them): the part sizes follow the same random balanced schedule as the random
strategy (the partition's part sizes), but which positions are committed at step t is chosen
MaskGIT-style: every still-pending position is masked and sampled, its confidence is the model's
probability of the sampled stack, Σ_d log softmax(guided logits)_d[S_nd] (before temperature /
top-k / top-p, as MaskGIT scores the sampled token under the predicted distribution), and the n_t
most confident ones are kept (Top-C). Top-C-50% draws the n_t positions uniformly among the
max(n_t, ⌈c/2⌉) most confident of the c pending positions (the top 50%, or all the remaining at
the last steps). Uncommitted positions are masked again and re-sampled at the next step. The
revise phase always uses random partitions: a confidence rule there would mask every
not-yet-revised position at once.

Randomness is per sample: sample b's partitions, categorical draws and Top-C-50% choices come only
from its own CPU ``torch.Generator`` seeded with ``seeds[b]``, in a fixed order (draft partition,
draft uniforms, then per revise pass its partition and uniforms), each drawn with a shape that
depends on that sample alone. Codes are drawn by inverse-CDF sampling on those uniforms, so a
sample's codes do not depend on the batch it is decoded in (up to batch-dependent float rounding in
the model's own matmuls). ``sample_seeds`` derives each sample's seed from the experiment seed and
the sample's global index, so results do not depend on batch size, shards or GPU count either.

Too many parts: for full-image generation, T_draft or T_revise above N is a config mistake and
raises a one-line DrrError naming the key. ``balanced_partition`` itself clamps T to the number of
positions it partitions (one position per part), so an inpainting region smaller than T is
generated one position per step.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from drr.core.errors import DrrError
from drr.transformer.model import KVCache

STRATEGIES = ("random", "top-c", "top-c-50")
GUIDED_PHASES = {"none": (), "draft": ("draft",), "revise": ("revise",),
                 "both": ("draft", "revise")}
SAMPLING_STREAM = 2  # SeedSequence domain of per-sample seeds (transformer training uses 1)


@dataclass
class PhaseSettings:
    """How codes are sampled in one phase (draft or revise)."""

    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    guidance: float | None = None  # CFG scale s: logits = null + s·(cond − null); None: no guidance

    def check(self, key: str) -> None:
        """Raise a one-line DrrError naming `key` (e.g. sampling.draft) for an invalid setting."""
        if not self.temperature > 0:
            raise DrrError(f"{key}.temperature: {self.temperature} is not > 0")
        if self.top_k is not None and self.top_k < 1:
            raise DrrError(f"{key}.top_k: {self.top_k} is not >= 1")
        if self.top_p is not None and not 0 < self.top_p <= 1:
            raise DrrError(f"{key}.top_p: {self.top_p} is not in (0, 1]")
        if self.guidance is not None and self.guidance < 0:
            raise DrrError(f"sampling.guidance_scale: {self.guidance} is negative")


@dataclass
class DecodeSettings:
    """Draft-and-Revise settings: T_draft, T_revise, M (eq. 13-14), UPDATE rule, phase sampling."""

    t_draft: int
    t_revise: int
    revise_iterations: int
    strategy: str = "random"
    draft: PhaseSettings = field(default_factory=PhaseSettings)
    revise: PhaseSettings = field(default_factory=PhaseSettings)

    def __post_init__(self):
        for key in ("t_draft", "t_revise"):
            if getattr(self, key) < 1:
                raise DrrError(f"sampling.{key}: {getattr(self, key)} parts, need at least 1")
        if self.revise_iterations < 0:
            raise DrrError(f"sampling.revise_iterations: {self.revise_iterations} is negative")
        if self.strategy not in STRATEGIES:
            raise DrrError(f"sampling.strategy: {self.strategy!r} is not one of "
                           f"{', '.join(STRATEGIES)}")
        self.draft.check("sampling.draft")
        self.revise.check("sampling.revise")

    @classmethod
    def from_config(cls, sampling: dict) -> "DecodeSettings":
        """From the ``sampling`` section of a resolved config; guidance_scale goes to the phases
        that guidance_in names."""
        where = sampling["guidance_in"]
        if where not in GUIDED_PHASES:
            raise DrrError(f"sampling.guidance_in: {where!r} is not one of "
                           f"{', '.join(GUIDED_PHASES)}")

        def phase(name: str) -> PhaseSettings:
            s = sampling[name]
            guided = name in GUIDED_PHASES[where]
            return PhaseSettings(temperature=float(s["temperature"]), top_k=s["top_k"],
                                 top_p=s["top_p"],
                                 guidance=float(sampling["guidance_scale"]) if guided else None)

        return cls(t_draft=int(sampling["t_draft"]), t_revise=int(sampling["t_revise"]),
                   revise_iterations=int(sampling["revise_iterations"]),
                   strategy=sampling["strategy"],
                   draft=phase("draft"), revise=phase("revise"))

    def check_positions(self, n_positions: int) -> None:
        """Full-image generation: more parts than positions is a config mistake."""
        for key in ("t_draft", "t_revise"):
            if getattr(self, key) > n_positions:
                raise DrrError(f"sampling.{key}: {getattr(self, key)} parts for {n_positions} "
                               f"positions")


def sample_seeds(experiment_seed: int, indices: Sequence[int] | torch.Tensor) -> torch.Tensor:
    """Per-sample seeds (LongTensor, in [0, 2^63)) from the experiment seed and each sample's global
    index: SeedSequence([experiment_seed, SAMPLING_STREAM, index]), independent of batching."""
    idx = torch.as_tensor(indices).flatten().tolist()
    return torch.tensor([int(np.random.SeedSequence([experiment_seed, SAMPLING_STREAM, int(i)])
                             .generate_state(1, np.uint64)[0] >> np.uint64(1)) for i in idx],
                        dtype=torch.long)


def balanced_partition(n_positions: int, T: int, generator: torch.Generator,
                       region: torch.Tensor | None = None) -> torch.Tensor:
    """Eq. 12: a uniformly random balanced partition into T parts of the positions (of `region`,
    an (N,) bool mask, if given). Returns (N,) int64 part indices, -1 outside the region.

    With c positions, c mod T uniformly chosen parts get ⌈c/T⌉ positions, the others ⌊c/T⌋; the
    positions are then dealt by a uniform permutation. T > c is clamped to c (one position a part).
    """
    if T < 1:
        raise ValueError(f"a partition needs at least 1 part, got {T}")
    positions = torch.arange(n_positions) if region is None else region.cpu().nonzero().flatten()
    count = len(positions)
    parts = torch.full((n_positions,), -1, dtype=torch.long)
    T = min(T, count)
    if T == 0:
        return parts
    small, extra = divmod(count, T)
    sizes = small + (torch.randperm(T, generator=generator) < extra).long()
    parts[positions[torch.randperm(count, generator=generator)]] = torch.repeat_interleave(
        torch.arange(T), sizes)
    return parts


def guide(cond_logits: torch.Tensor, null_logits: torch.Tensor, scale: float) -> torch.Tensor:
    """Classifier-free guidance: null + s·(cond − null)."""
    return null_logits + scale * (cond_logits - null_logits)


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int | None = None,
                  top_p: float | None = None) -> torch.Tensor:
    """Temperature, then top-k (keep the k largest), then top-p (keep the smallest most-likely set
    with mass >= p); removed codes get -inf. logits (..., K)."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        keep = torch.zeros_like(logits, dtype=torch.bool).scatter_(
            -1, logits.topk(top_k, dim=-1).indices, True)
        logits = logits.masked_fill(~keep, float("-inf"))
    if top_p is not None and top_p < 1:
        ordered, order = logits.sort(dim=-1, descending=True)
        probs = ordered.softmax(-1)
        drop = (probs.cumsum(-1) - probs) >= top_p  # mass of the strictly more likely codes
        logits = logits.masked_fill(torch.zeros_like(drop).scatter_(-1, order, drop), float("-inf"))
    return logits


def check_logits(finite: torch.Tensor) -> None:
    """DrrError unless `finite` (all logits of a sampling pass were finite) holds: NaN or inf
    logits would silently give the last code everywhere. One check per pass: no per-step sync."""
    if not bool(finite):
        raise DrrError("the transformer's logits hold NaN or inf (its weights, or an overflow "
                       "under --precision bf16); no sample is written")


def sample_categorical(probs: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF sampling: probs (M, K) (need not be normalised), uniforms (M,) in [0, 1) ->
    (M,) int64 codes. Never returns a zero-probability code."""
    cdf = probs.cumsum(-1)
    target = (uniforms.to(cdf.dtype) * cdf[:, -1]).unsqueeze(-1)
    codes = torch.searchsorted(cdf, target, right=True).squeeze(-1)
    last_possible = probs.shape[-1] - 1 - (probs.flip(-1) > 0).long().argmax(-1)
    return torch.minimum(codes, last_possible)


def _sample_stacks(model, codes: torch.Tensor, mask: torch.Tensor, cond: torch.Tensor,
                   select: torch.Tensor, uniforms: torch.Tensor, phase: PhaseSettings,
                   score: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One spatial forward of (codes, mask), then D depth steps at the `select` positions (B, N).

    uniforms (B, N, D). Returns the sampled stacks (M, D) in ``select.nonzero()`` order and, when
    `score`, their confidences Σ_d log p(S_nd) under the guided logits (M,), else None.
    """
    batch, position = select.nonzero(as_tuple=True)
    guided = phase.guidance is not None
    if guided:  # conditional rows, then null-condition rows: one batched forward of 2B rows
        b = len(codes)
        h, _ = model.context(torch.cat([codes, codes]), torch.cat([mask, mask]),
                             torch.cat([cond, model.null_condition(cond)]))
        h = torch.cat([h[batch, position], h[batch + b, position]])
    else:
        h, _ = model.context(codes, mask, cond)
        h = h[batch, position]
    m = len(batch)
    u = uniforms[batch, position]
    depth = codes.shape[-1]
    stacks = []
    confidence = torch.zeros(m, dtype=torch.float64, device=codes.device) if score else None
    cache = KVCache(depth)  # the depth transformer reads one new token a depth
    partial = h.new_zeros(len(h), model.code_emb.shape[1], dtype=model.code_emb.dtype)
    finite = torch.ones((), dtype=torch.bool, device=codes.device)
    for d in range(depth):
        logits = model.depth_step(cache, h, partial, d)
        if logits.dtype in (torch.float16, torch.bfloat16):
            logits = logits.float()
        if guided:
            logits = guide(logits[:m], logits[m:], phase.guidance)
        finite &= torch.isfinite(logits).all()
        filtered = filter_logits(logits, phase.temperature, phase.top_k, phase.top_p)
        code = sample_categorical(filtered.softmax(-1), u[:, d])
        if score:
            confidence += logits.log_softmax(-1).gather(1, code[:, None]).squeeze(1).double()
        stacks.append(code)
        if d + 1 < depth:
            e = F.embedding(code, model.code_emb)
            partial = partial + (torch.cat([e, e]) if guided else e)
    check_logits(finite)
    return torch.stack(stacks, dim=1), confidence


def _draw_uniforms(generators: Sequence[torch.Generator], steps: list[int], n: int, depth: int,
                   selection: bool, device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Each sample's uniforms for its own T_b steps, from its own generator: codes (B, T, N, D) and,
    for Top-C-50%, position choices (B, T, N); zero-padded to the batch's largest T."""
    t_max = max(steps, default=0)
    code_u = torch.zeros(len(steps), t_max, n, depth, dtype=torch.float64)
    select_u = torch.zeros(len(steps), t_max, n, dtype=torch.float64) if selection else None
    for b, (g, t_b) in enumerate(zip(generators, steps)):
        code_u[b, :t_b] = torch.rand(t_b, n, depth, generator=g, dtype=torch.float64)
        if selection:
            select_u[b, :t_b] = torch.rand(t_b, n, generator=g, dtype=torch.float64)
    return code_u.to(device), None if select_u is None else select_u.to(device)


@torch.inference_mode()
def update(model, codes: torch.Tensor, cond: torch.Tensor, parts: torch.Tensor,
           phase: PhaseSettings, generators: Sequence[torch.Generator], strategy: str = "random",
           known: torch.Tensor | None = None) -> torch.Tensor:
    """Algorithm 1: UPDATE(S, Π). codes (B, N, D) int64; cond (B, L); parts (B, N) int64 part index
    of each position (-1: never touched), sample b having parts 0..T_b-1; known (B, N) bool, False
    where the codes are still [MASK] (S^empty in the draft; None: all known). Returns new codes.

    random: step t masks part t (and every still-empty position) and re-samples part t.
    top-c / top-c-50: step t masks every pending position of the partition (and every empty one),
    samples them all and commits n_t = |part t| of them by confidence (module docstring).
    """
    if strategy not in STRATEGIES:
        raise DrrError(f"sampling.strategy: {strategy!r} is not one of {', '.join(STRATEGIES)}")
    b, n, depth = codes.shape
    device = codes.device
    codes = codes.clone()
    parts = parts.to(device)
    filled = (torch.ones(b, n, dtype=torch.bool, device=device) if known is None
              else known.to(device))
    steps = (parts.max(dim=1).values + 1).tolist()
    code_u, select_u = _draw_uniforms(generators, steps, n, depth, strategy == "top-c-50", device)
    pending = parts >= 0
    for t in range(max(steps, default=0)):
        part = parts == t
        if strategy == "random":
            if not part.any():
                continue
            stacks, _ = _sample_stacks(model, codes, part | ~filled, cond, part, code_u[:, t],
                                       phase)
            codes[part] = stacks
            filled |= part
            continue
        size = part.sum(dim=1)
        active = pending & (size > 0)[:, None]
        if not active.any():
            continue
        stacks, confidence = _sample_stacks(model, codes, pending | ~filled, cond, active,
                                            code_u[:, t], phase, score=True)
        score = torch.full((b, n), float("-inf"), dtype=torch.float64, device=device)
        score[active] = confidence
        rank = score.argsort(dim=1, descending=True, stable=True).argsort(dim=1)
        if strategy == "top-c-50":
            pool = rank < torch.maximum(size, (active.sum(dim=1) + 1) // 2)[:, None]
            key = torch.where(pool, select_u[:, t], 2.0)
            rank = key.argsort(dim=1, stable=True).argsort(dim=1)
        commit = active & (rank < size[:, None])
        sampled = codes.clone()
        sampled[active] = stacks
        codes = torch.where(commit[..., None], sampled, codes)
        filled |= commit
        pending &= ~commit
    return codes


@torch.inference_mode()
def draft_and_revise(model, cond: torch.Tensor, settings: DecodeSettings, seeds: torch.Tensor,
                     region: torch.Tensor | None = None, init_codes: torch.Tensor | None = None,
                     return_draft: bool = False, on_pass=None, on_phase=None
                     ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Algorithm 2. cond (B, L) on the model's device; seeds (B,) per-sample seeds (see
    ``sample_seeds``). Inpainting: init_codes (B, N, D) and region (B, N) bool (True = generate);
    only the region is partitioned and changed. Puts the model in eval mode.

    Returns the codes (B, N, D) int64, and the draft too when return_draft. ``on_pass(m, codes)``,
    when given, sees the codes after the draft (m = 0) and after each revise pass m = 1..M (the
    draft-to-revised progressions of paper Figure 5). ``on_phase(name)``, when given, is called
    when a phase ends: 'draft' after the draft (its partition, uniforms and T_draft steps),
    'revise' after the M revise passes (also when M = 0); the speed measurement's clock
    (drr.sampling.speed) marks the time there.
    """
    model.eval()
    c = model.config
    b, n, device = len(cond), c.num_positions, cond.device
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for a batch of {b}")
    if (region is None) != (init_codes is None):
        raise ValueError("inpainting needs both region and init_codes")
    if region is None:
        settings.check_positions(n)
        codes = torch.zeros(b, n, c.depth, dtype=torch.long, device=device)
        known = torch.zeros(b, n, dtype=torch.bool, device=device)
        regions = [None] * b
    else:
        if init_codes.shape != (b, n, c.depth) or region.shape != (b, n):
            raise ValueError(f"init_codes {tuple(init_codes.shape)} and region "
                             f"{tuple(region.shape)} do not match ({b}, {n}, {c.depth})")
        codes = init_codes.to(device=device, dtype=torch.long)
        known = ~region.to(device=device, dtype=torch.bool)
        regions = list(region.bool().cpu())
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]

    def partition(T: int) -> torch.Tensor:
        return torch.stack([balanced_partition(n, T, g, r) for g, r in zip(generators, regions)])

    codes = update(model, codes, cond, partition(settings.t_draft), settings.draft, generators,
                   settings.strategy, known)
    draft = codes
    if on_phase is not None:
        on_phase("draft")
    if on_pass is not None:
        on_pass(0, codes)
    for m in range(1, settings.revise_iterations + 1):
        codes = update(model, codes, cond, partition(settings.t_revise), settings.revise,
                       generators)
        if on_pass is not None:
            on_pass(m, codes)
    if on_phase is not None:
        on_phase("revise")
    return (codes, draft) if return_draft else codes
