"""Raster-order sampling of the autoregressive RQ-Transformer (drr/transformer/ar.py). The
sampling CLIs reach it through drr.sampling.sampler, which picks it for `transformer.model.kind: ar`.

``sample_raster`` generates the N code stacks one position after another, each of its D codes one
after another, as the official RQ-Transformer samples: the spatial transformer reads each new stack
once into a key/value cache (one token per step, attending to all cached ones), and the depth
transformer runs with its own cache over the D depths of a position. Settings (``ARSettings``,
config section ``sampling.ar``): temperature, then top-k, then top-p, per depth where a list of D
values is given (the official sampler takes per-depth top-k/top-p lists and one temperature), and
optional classifier-free guidance, batched as in decode.py (conditional rows, then null-condition
rows; logits null + s·(cond − null)).

Randomness is per sample, as in decode.py: sample b draws its N x D uniforms from its own CPU
generator seeded with ``seeds[b]`` and codes are drawn by inverse-CDF sampling on them, so a
sample's codes do not depend on the batch it is decoded in (up to float rounding in the model's
own matmuls).

Inpainting (``region``/``init_codes``): positions outside the region keep their codes; a position
inside it is sampled given everything before it in raster order (condition, known codes, earlier
samples). Known codes after it cannot be seen: that is the AR model's limitation the paper's
Figure 1 shows. The longest prefix of positions outside every row's region is read in one forward.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from drr.core.errors import DrrError
from drr.transformer.model import KVCache


def _per_depth(value, depth: int, key: str) -> list:
    if isinstance(value, (list, tuple)):
        if len(value) == 1:
            return list(value) * depth
        if len(value) != depth:
            raise DrrError(f"{key}: {len(value)} values for D = {depth} depths; give one value, "
                           f"or one per depth")
        return list(value)
    return [value] * depth


@dataclass
class ARSettings:
    """How the AR model samples: temperature; top_k / top_p as one value or one per depth
    (None: off); guidance: the CFG scale, or None for none."""

    temperature: float = 1.0
    top_k: int | list[int] | None = None
    top_p: float | list[float] | None = None
    guidance: float | None = None

    @classmethod
    def from_config(cls, sampling: dict) -> "ARSettings":
        """From the ``sampling`` section of a resolved config (its ``ar`` subsection)."""
        s = sampling["ar"]
        return cls(temperature=float(s["temperature"]), top_k=s["top_k"], top_p=s["top_p"],
                   guidance=None if s["guidance_scale"] is None else float(s["guidance_scale"]))

    def depth_filters(self, depth: int) -> list[tuple[float, int | None, float | None]]:
        """(temperature, top_k, top_p) of each depth; a one-line DrrError naming the key if a
        setting is invalid."""
        if not self.temperature > 0:
            raise DrrError(f"sampling.ar.temperature: {self.temperature} is not > 0")
        if self.guidance is not None and self.guidance < 0:
            raise DrrError(f"sampling.ar.guidance_scale: {self.guidance} is negative")
        ks = _per_depth(self.top_k, depth, "sampling.ar.top_k")
        ps = _per_depth(self.top_p, depth, "sampling.ar.top_p")
        for k in ks:
            if k is not None and k < 1:
                raise DrrError(f"sampling.ar.top_k: {k} is not >= 1")
        for p in ps:
            if p is not None and not 0 < p <= 1:
                raise DrrError(f"sampling.ar.top_p: {p} is not in (0, 1]")
        return [(self.temperature, k, p) for k, p in zip(ks, ps)]


@torch.inference_mode()
def sample_raster(model, cond: torch.Tensor, settings: ARSettings, seeds: torch.Tensor,
                  region: torch.Tensor | None = None, init_codes: torch.Tensor | None = None,
                  return_logits: bool = False
                  ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample code maps (B, N, D) int64 in raster order with key/value caches. cond (B, L) on the
    model's device; seeds (B,) per-sample seeds (decode.sample_seeds). Inpainting: init_codes
    (B, N, D) and region (B, N) bool (True = generate). Puts the model in eval mode.

    return_logits: also return the (guided, unfiltered) logits each code was drawn from,
    (B, N, D, K) in the logits' dtype (float32 under bf16 autocast), NaN where nothing was sampled
    (for tests).
    """
    from drr.sampling.decode import check_logits, filter_logits, guide, sample_categorical

    if model.config.kind != "ar":
        raise DrrError(f"transformer.model.kind: raster-order sampling needs an 'ar' model, this "
                       f"one is {model.config.kind!r}")
    model.eval()
    c = model.config
    b, n, depth, device = len(cond), c.num_positions, c.depth, cond.device
    if len(seeds) != b:
        raise ValueError(f"{len(seeds)} seeds for a batch of {b}")
    if (region is None) != (init_codes is None):
        raise ValueError("inpainting needs both region and init_codes")
    filters = settings.depth_filters(depth)
    guided = settings.guidance is not None
    if guided and not getattr(model, "has_null_condition", True):
        raise DrrError("sampling.ar.guidance_scale: this model's null condition was never trained "
                       "(an imported official RQ-Transformer); set it to null")
    if region is None:
        codes = torch.zeros(b, n, depth, dtype=torch.long, device=device)
        region = torch.ones(b, n, dtype=torch.bool, device=device)
    else:
        if init_codes.shape != (b, n, depth) or region.shape != (b, n):
            raise ValueError(f"init_codes {tuple(init_codes.shape)} and region "
                             f"{tuple(region.shape)} do not match ({b}, {n}, {depth})")
        codes = init_codes.to(device=device, dtype=torch.long).clone()
        region = region.to(device=device, dtype=torch.bool)
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds.tolist()]
    uniforms = torch.stack([torch.rand(n, depth, generator=g, dtype=torch.float64)
                            for g in generators]).to(device) if b else \
        torch.zeros(0, n, depth, dtype=torch.float64, device=device)
    logits_seen = None
    finite = torch.ones((), dtype=torch.bool, device=device)
    todo = region.any(0).cpu()
    if b == 0 or not todo.any():
        return (codes, torch.full((b, n, depth, c.codebook_size), float("nan"), device=device)) \
            if return_logits else codes

    def rows(x: torch.Tensor) -> torch.Tensor:  # conditional rows, then null-condition rows
        return torch.cat([x, x]) if guided else x

    first = int(todo.nonzero()[0])
    row_cond = torch.cat([cond, model.null_condition(cond)]) if guided else cond
    cache, h = model.begin(row_cond, rows(codes[:, :first]))
    for pos in range(first, n):
        if todo[pos]:
            head_cache = KVCache(depth)
            partial = torch.zeros(len(h), c.embed_dim, dtype=model.code_emb.dtype, device=device)
            stack = []
            for d, (temperature, top_k, top_p) in enumerate(filters):
                logits = model.depth_step(head_cache, h, partial, d)
                if logits.dtype in (torch.float16, torch.bfloat16):
                    logits = logits.float()
                if guided:
                    logits = guide(logits[:b], logits[b:], settings.guidance)
                finite &= torch.isfinite(logits).all()
                if return_logits:
                    if logits_seen is None:
                        logits_seen = torch.full((b, n, depth, logits.shape[-1]), float("nan"),
                                                 dtype=logits.dtype, device=device)
                    logits_seen[:, pos, d] = logits
                code = sample_categorical(filter_logits(logits, temperature, top_k, top_p)
                                          .softmax(-1), uniforms[:, pos, d])
                stack.append(code)
                if d + 1 < depth:
                    partial = partial + rows(F.embedding(code, model.code_emb))
            sampled = torch.stack(stack, dim=1)
            codes[:, pos] = torch.where(region[:, pos, None], sampled, codes[:, pos])
        if pos + 1 < n:
            h = model.extend(cache, rows(codes[:, pos:pos + 1]), pos)[:, -1]
    check_logits(finite)
    return (codes, logits_seen) if return_logits else codes
