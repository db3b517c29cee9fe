"""Residual quantization (paper §3.1, eq. 1-3) with EMA-updated codebooks (App. A.1).

A `Codebook` holds K code embeddings e(k) in R^{n_z}. It is not trained by gradients: during
training each call updates exponential moving averages of the vectors assigned to each code, and the
embedding is their Laplace-smoothed mean (van den Oord et al., 2017, App. A.1). Codes that fall out
of use are restarted from current encoder outputs.

The state-dict layout is the official RQ-VAE's: per depth d, ``codebooks.{d}.weight`` of shape
(K + 1, n_z) (the last row is a padding embedding of zeros that is never selected),
``codebooks.{d}.cluster_size_ema`` (K,) and ``codebooks.{d}.embed_ema`` (K, n_z). With a shared
codebook, ``codebooks`` holds the same module D times, so the D keys are aliases of one tensor.
"""

from __future__ import annotations

import math

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

# Elements of one (vectors x codes) distance block: bounds the memory of a nearest-code search
# (2**24 float32 = 64 MiB) whatever the batch size and codebook size.
DISTANCE_BLOCK_ELEMENTS = 1 << 24


def _distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


# --------------------------------------------------------------------------------------------------
# One codebook
# --------------------------------------------------------------------------------------------------

class Codebook(nn.Module):
    """K code embeddings with EMA updates and restarts of unused codes.

    Args:
        codebook_size: K
        embed_dim: n_z
        decay: EMA decay of ``cluster_size_ema`` and ``embed_ema``
        restart_unused_codes: replace codes whose ``cluster_size_ema`` falls below 1 (training only)
        eps: Laplace smoothing of the cluster sizes

    Buffers (no gradient ever reaches them):
        weight: (K + 1, n_z) embeddings; row K is the padding row (zeros), never selected
        cluster_size_ema: (K,) EMA of how many vectors each code was assigned per update
        embed_ema: (K, n_z) EMA of the sum of the vectors assigned to each code
    """

    def __init__(self, codebook_size: int, embed_dim: int, decay: float = 0.99,
                 restart_unused_codes: bool = True, eps: float = 1e-5):
        super().__init__()
        self.codebook_size = codebook_size
        self.embed_dim = embed_dim
        self.decay = decay
        self.restart_unused_codes = restart_unused_codes
        self.eps = eps
        # Random generator for restarts; None: the global RNG. Only training-mode updates draw from it.
        self.generator: torch.Generator | None = None

        weight = torch.randn(codebook_size + 1, embed_dim)
        weight[codebook_size].zero_()  # padding row
        self.register_buffer("weight", weight)
        self.register_buffer("cluster_size_ema", torch.ones(codebook_size))
        self.register_buffer("embed_ema", weight[:-1].clone())

    @property
    def embeddings(self) -> torch.Tensor:
        """The K code embeddings e(k), without the padding row. Shape: (K, n_z)."""
        return self.weight[:-1]

    # ---- eq. 1: Q(z; C) = argmin_k ||z - e(k)||^2 -------------------------------------------------

    @torch.no_grad()
    def find_nearest(self, vectors: torch.Tensor) -> torch.Tensor:
        """Nearest code of each vector (eq. 1), with ||a||^2 - 2 a.b + ||b||^2 in blocks.

        Shape:
            vectors: (N, n_z) -> codes (N,) int64
        """
        codebook = self.embeddings.float()  # (K, n_z)
        vectors = vectors.float()
        code_norm = codebook.pow(2).sum(dim=1)  # (K,)
        rows = max(1, DISTANCE_BLOCK_ELEMENTS // self.codebook_size)
        out = torch.empty(vectors.shape[0], dtype=torch.long, device=vectors.device)
        for start in range(0, vectors.shape[0], rows):
            block = vectors[start:start + rows]  # (n, n_z)
            # ||a||^2 is the same for every code of a row, so it does not change the argmin
            dist2 = torch.addmm(code_norm.unsqueeze(0), block, codebook.t(), alpha=-2.0)  # (n, K)
            out[start:start + rows] = dist2.argmin(dim=1)
        return out

    def lookup(self, codes: torch.Tensor) -> torch.Tensor:
        """e(k) for each code. Shape: codes (...) int64 -> (..., n_z)."""
        return F.embedding(codes, self.weight)

    # ---- EMA update (training only) --------------------------------------------------------------

    @torch.no_grad()
    def update_buffers(self, vectors: torch.Tensor, codes: torch.Tensor) -> None:
        """Fold one batch of (vector, assigned code) pairs into the EMA statistics, then restart
        codes whose usage fell below 1 from random current vectors.

        In a torch.distributed run the batch statistics are summed over processes and the restart
        vectors are rank 0's, so every process keeps an identical codebook.

        Shape:
            vectors: (N, n_z); codes: (N,) int64
        """
        K = self.codebook_size
        vectors = vectors.detach().float()
        cluster_size = torch.bincount(codes, minlength=K).to(vectors.dtype)  # (K,) n_k
        embed_sum = torch.zeros(K, self.embed_dim, dtype=vectors.dtype, device=vectors.device)
        embed_sum.index_add_(0, codes, vectors)  # (K, n_z) sum of the vectors assigned to k
        if _distributed():
            dist.all_reduce(cluster_size)
            dist.all_reduce(embed_sum)

        # N_k <- decay N_k + (1 - decay) n_k ; m_k <- decay m_k + (1 - decay) sum_{z -> k} z
        self.cluster_size_ema.mul_(self.decay).add_(cluster_size, alpha=1 - self.decay)
        self.embed_ema.mul_(self.decay).add_(embed_sum, alpha=1 - self.decay)

        if self.restart_unused_codes:
            random_vectors = self._random_vectors(vectors)  # (K, n_z)
            if _distributed():
                dist.broadcast(random_vectors, src=0)
            unused = self.cluster_size_ema < 1.0  # (K,)
            self.embed_ema[unused] = random_vectors[unused]
            self.cluster_size_ema[unused] = 1.0

    def _random_vectors(self, vectors: torch.Tensor) -> torch.Tensor:
        """K vectors drawn without replacement from `vectors`, tiled with small noise if N < K.

        Shape:
            vectors: (N, n_z) -> (K, n_z)
        """
        K, (N, dim) = self.codebook_size, vectors.shape
        gen = self.generator
        if N < K:
            n_repeats = math.ceil(K / N)
            vectors = vectors.repeat(n_repeats, 1)  # (N * n_repeats, n_z)
            noise_std = 0.01 / math.sqrt(dim)
            noise = torch.randn(vectors.shape, generator=gen, device=vectors.device, dtype=vectors.dtype)
            vectors = vectors + noise_std * noise
        perm = torch.randperm(vectors.shape[0], generator=gen, device=vectors.device)[:K]
        return vectors[perm].contiguous()

    @torch.no_grad()
    def update_embeddings(self) -> None:
        """e(k) <- m_k / N~_k with Laplace-smoothed cluster sizes N~_k = n (N_k + eps) / (n + K eps)."""
        n = self.cluster_size_ema.sum()
        smoothed = n * (self.cluster_size_ema + self.eps) / (n + self.codebook_size * self.eps)
        self.weight[:-1].copy_(self.embed_ema / smoothed.unsqueeze(1))

    # ---- one quantization step ---------------------------------------------------------------------

    def forward(self, vectors: torch.Tensor, update: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Quantize vectors to their nearest codes (eq. 1); with ``update``, also do one EMA step.

        The returned embeddings are looked up with the codebook from before this step's update;
        the embedding is refreshed from the EMA buffers afterwards.

        Shape:
            vectors: (N, n_z) -> (embeddings (N, n_z) detached float32, codes (N,) int64)
        """
        codes = self.find_nearest(vectors)
        if update:
            self.update_buffers(vectors, codes)
        embeds = self.lookup(codes).detach()  # a copy: later in-place updates do not change it
        if update:
            self.update_embeddings()
        return embeds, codes


# --------------------------------------------------------------------------------------------------
# Residual quantizer
# --------------------------------------------------------------------------------------------------

class ResidualQuantizer(nn.Module):
    """RQ with depth D (eq. 2-3) over a channel-last feature map.

    Args:
        codebook_size: K
        embed_dim: n_z
        depth: D, codes per position; D = 1 is plain VQ
        shared_codebook: one codebook for all depths (``codebooks`` holds the same module D times)
        decay, restart_unused_codes: see `Codebook`
    """

    def __init__(self, codebook_size: int, embed_dim: int, depth: int, shared_codebook: bool = True,
                 decay: float = 0.99, restart_unused_codes: bool = True):
        super().__init__()
        self.codebook_size = codebook_size
        self.embed_dim = embed_dim
        self.depth = depth
        self.shared_codebook = shared_codebook
        if shared_codebook:
            codebook = Codebook(codebook_size, embed_dim, decay, restart_unused_codes)
            self.codebooks = nn.ModuleList([codebook] * depth)
        else:
            self.codebooks = nn.ModuleList(
                [Codebook(codebook_size, embed_dim, decay, restart_unused_codes) for _ in range(depth)])

    def codebook_weights(self, d: int) -> torch.Tensor:
        """The code embeddings used at depth d (0-based), without the padding row. Shape: (K, n_z)."""
        return self.codebooks[d].embeddings

    def set_generator(self, generator: torch.Generator | None) -> None:
        """Use `generator` (None: the global RNG) for the random vectors of code restarts."""
        for codebook in self.codebooks:
            codebook.generator = generator

    def quantize(self, z: torch.Tensor, update: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual quantization of every vector (eq. 3), without gradients.

        With ``update`` the codebooks take one EMA step per depth (a shared codebook takes D steps).

        Shape:
            z: (..., n_z) -> (partial sums (..., D, n_z) float32: sum_{d' <= d} e(k_d'),
                              codes (..., D) int64)
        """
        lead = z.shape[:-1]
        with torch.no_grad(), torch.autocast(device_type=z.device.type, enabled=False):
            residual = z.detach().float().reshape(-1, self.embed_dim)  # r_0 = z, (N, n_z)
            z_hat = torch.zeros_like(residual)
            partial_sums, codes = [], []
            for codebook in self.codebooks:
                embeds, k = codebook(residual, update=update)  # k_d = Q(r_{d-1}; C)
                residual = residual - embeds  # r_d = r_{d-1} - e(k_d)
                z_hat = z_hat + embeds  # sum_{d' <= d} e(k_d')
                partial_sums.append(z_hat)
                codes.append(k)
        partial_sums = torch.stack(partial_sums, dim=1).reshape(*lead, self.depth, self.embed_dim)
        codes = torch.stack(codes, dim=1).reshape(*lead, self.depth)
        return partial_sums, codes

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Quantize z, updating the codebooks in training mode.

        Returns the straight-through quantized features z + (z_hat - z).detach() (the value is
        z_hat = sum_d e(k_d), the gradient goes to z), the commitment loss
        mean_d ||z - sum_{d' <= d} e(k_d')||^2 (a mean over elements), and the codes.

        Shape:
            z: (..., n_z) -> (z_q (..., n_z), loss (), codes (..., D) int64)
        """
        partial_sums, codes = self.quantize(z, update=self.training)
        z_hat = partial_sums[..., -1, :].to(z.dtype)  # eq. 3: z_hat = sum_d e(k_d)
        commitment_loss = torch.stack([
            F.mse_loss(z.float(), partial_sums[..., d, :]) for d in range(self.depth)]).mean()
        z_q = z + (z_hat - z).detach()  # straight-through estimator
        return z_q, commitment_loss, codes

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-depth code embeddings e(k_d), each from its depth's codebook.

        Shape:
            codes: (..., D) int64 -> (..., D, n_z)
        """
        return torch.stack([self.codebooks[d].lookup(codes[..., d]) for d in range(self.depth)], dim=-2)

    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """z_hat = sum_d e(k_d) (eq. 3). Shape: codes (..., D) int64 -> (..., n_z)."""
        return self.embed_codes(codes).sum(dim=-2)
