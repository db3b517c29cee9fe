"""RQ-VAE (paper §3.1, App. A.1): VQGAN encoder -> residual quantizer -> VQGAN decoder.

An image X in [-1, 1] is encoded to a feature map Z = E(X) of shape H x W x n_z, each vector
Z_hw is represented by a code stack (k_1, ..., k_D) (eq. 2-3), and the decoder reconstructs the
image from Z_hat = sum_d e(k_d). `RQVAEConfig` sizes the network; it is the ``tokenizer.model``
section of a drr config, and `RQVAEConfig.official(name)` gives the paper's pretrained one.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

from drr.core.errors import DrrError
from drr.tokenizer.quantizer import ResidualQuantizer
from drr.tokenizer.vqgan import Decoder, Encoder

# --------------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------------

@dataclass
class RQVAEConfig:
    """Architecture of an RQ-VAE; the fields are the keys of ``tokenizer.model`` in configs/base.yaml."""

    in_channels: int = 3                    # image channels
    ch: int = 32                            # base width of the VQGAN encoder/decoder
    ch_mult: list[int] = field(default_factory=lambda: [1, 2, 2])  # width multiplier per level
    num_res_blocks: int = 1                 # residual blocks per level (the decoder has one more)
    attn_resolutions: list[int] = field(default_factory=list)      # feature sides (px) with attention
    dropout: float = 0.0                    # dropout in residual blocks
    z_channels: int = 32                    # encoder output channels
    embed_dim: int = 32                     # code embedding dimensionality n_z
    codebook_size: int = 256                # K
    code_shape: list[int] = field(default_factory=lambda: [8, 8, 4])  # H, W, D of a code map
    shared_codebook: bool = True            # one codebook for all depths
    decay: float = 0.99                     # EMA decay of codebook updates
    restart_unused_codes: bool = True       # restart codes whose EMA usage falls below 1

    def __post_init__(self):
        self.ch_mult = [int(m) for m in self.ch_mult]
        self.attn_resolutions = [int(r) for r in self.attn_resolutions]
        self.code_shape = [int(s) for s in self.code_shape]
        where = "tokenizer.model"
        if len(self.code_shape) != 3:
            raise DrrError(f"{where}.code_shape: expected [H, W, D], got {self.code_shape}")
        if self.code_shape[0] != self.code_shape[1]:
            raise DrrError(f"{where}.code_shape: code maps must be square (H == W), got {self.code_shape}")
        for width in [self.ch] + [self.ch * m for m in self.ch_mult]:
            if width <= 0 or width % min(32, width):
                raise DrrError(f"{where}.ch: a level with {width} channels cannot be split into 32 "
                               f"GroupNorm groups (ch {self.ch}, ch_mult {self.ch_mult})")

    @property
    def depth(self) -> int:
        """D, codes per position."""
        return self.code_shape[2]

    @property
    def resolution(self) -> int:
        """Side of the images, in pixels: H * 2**(len(ch_mult) - 1)."""
        return self.code_shape[0] * 2 ** (len(self.ch_mult) - 1)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def official(cls, name: str = "in256-rqvae-8x8x4") -> "RQVAEConfig":
        """A pretrained tokenizer's config by name (see `OFFICIAL_CONFIGS`)."""
        if name not in OFFICIAL_CONFIGS:
            raise DrrError(f"unknown official RQ-VAE {name!r}; known: {', '.join(OFFICIAL_CONFIGS)}")
        return cls(**OFFICIAL_CONFIGS[name])


# The official pretrained RQ-VAEs (github.com/kakaobrain/rq-vae-transformer), by checkpoint name.
OFFICIAL_CONFIGS: dict[str, dict] = {
    # ImageNet 256x256 -> 8x8x4 codes, K = 16,384 (App. A.1); also used for CC-3M and inpainting
    "in256-rqvae-8x8x4": dict(
        in_channels=3, ch=128, ch_mult=[1, 1, 2, 2, 4, 4], num_res_blocks=2, attn_resolutions=[8],
        dropout=0.0, z_channels=256, embed_dim=256, codebook_size=16384, code_shape=[8, 8, 4],
        shared_codebook=True, decay=0.99, restart_unused_codes=True),
}


# --------------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------------

class RQVAE(nn.Module):
    """The RQ-VAE tokenizer: images in [-1, 1] <-> code maps of shape (H, W, D).

    Submodules, in the official checkpoint's order: ``encoder``, ``decoder``, ``quantizer``,
    ``quant_conv`` (1x1, z_channels -> embed_dim) and ``post_quant_conv`` (1x1, embed_dim ->
    z_channels).
    """

    def __init__(self, config: RQVAEConfig):
        super().__init__()
        self.config = config
        vqgan = dict(in_channels=config.in_channels, ch=config.ch, ch_mult=config.ch_mult,
                     num_res_blocks=config.num_res_blocks, attn_resolutions=config.attn_resolutions,
                     dropout=config.dropout, z_channels=config.z_channels,
                     resolution=config.resolution)
        self.encoder = Encoder(**vqgan)
        self.decoder = Decoder(**vqgan)
        self.quantizer = ResidualQuantizer(config.codebook_size, config.embed_dim, config.depth,
                                           shared_codebook=config.shared_codebook, decay=config.decay,
                                           restart_unused_codes=config.restart_unused_codes)
        self.quant_conv = nn.Conv2d(config.z_channels, config.embed_dim, kernel_size=1)
        self.post_quant_conv = nn.Conv2d(config.embed_dim, config.z_channels, kernel_size=1)

    # ---- stages -----------------------------------------------------------------------------------

    def encode_features(self, x: torch.Tensor) -> torch.Tensor:
        """Z = E(X) (§3.1), channel-last, before quantization.

        Shape:
            x: (B, C, R, R) -> z: (B, H, W, n_z)
        """
        self._check_images(x)
        z = self.quant_conv(self.encoder(x))  # (B, n_z, H, W)
        return z.permute(0, 2, 3, 1).contiguous()  # (B, n_z, H, W) -> (B, H, W, n_z)

    def decode_features(self, z_hat: torch.Tensor) -> torch.Tensor:
        """Decoder on a channel-last (quantized) feature map.

        Shape:
            z_hat: (B, H, W, n_z) -> images (B, C, R, R)
        """
        z_hat = z_hat.permute(0, 3, 1, 2).contiguous()  # (B, H, W, n_z) -> (B, n_z, H, W)
        return self.decoder(self.post_quant_conv(z_hat))

    # ---- public API -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Reconstruct images; in training mode the codebooks take one EMA step per depth.

        Returns the reconstruction (gradients reach the encoder through the straight-through
        estimator), the commitment loss mean_d ||Z - sum_{d'<=d} e(k_d')||^2 (unweighted), and
        the codes.

        Shape:
            x: (B, C, R, R) in [-1, 1] -> (recon (B, C, R, R), commitment_loss (), codes (B, H, W, D) int64)
        """
        z = self.encode_features(x)  # (B, H, W, n_z)
        z_q, commitment_loss, codes = self.quantizer(z)  # eq. 2-3, (B, H, W, n_z), (), (B, H, W, D)
        recon = self.decode_features(z_q)
        return recon, commitment_loss, codes

    @torch.no_grad()
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Code maps S of images (§3.1). Never updates the codebooks, in any mode.

        Shape:
            x: (B, C, R, R) in [-1, 1] -> codes (B, H, W, D) int64
        """
        _, codes = self.quantizer.quantize(self.encode_features(x), update=False)
        return codes

    @torch.no_grad()
    def decode_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Images from code maps, via Z_hat = sum_d e(k_d). Not clamped to [-1, 1].

        Shape:
            codes: (B, H, W, D) int64 -> images (B, C, R, R)
        """
        return self.decode_features(self.quantizer.decode_codes(codes))

    def embed_codes(self, codes: torch.Tensor) -> torch.Tensor:
        """Per-depth code embeddings e(k_d) from the (frozen) codebooks.

        Shape:
            codes: (B, H, W, D) int64 -> (B, H, W, D, n_z)
        """
        return self.quantizer.embed_codes(codes)

    def get_last_layer(self) -> torch.Tensor:
        """The decoder's last weight, for the adaptive weight of the adversarial loss."""
        return self.decoder.conv_out.weight

    def _check_images(self, x: torch.Tensor) -> None:
        R, C = self.config.resolution, self.config.in_channels
        if x.dim() != 4 or x.shape[1] != C or x.shape[2] != R or x.shape[3] != R:
            raise ValueError(f"RQVAE expects images of shape (B, {C}, {R}, {R}), got {tuple(x.shape)}")
