"""The VQGAN encoder and decoder (Esser et al., "Taming Transformers"), as RQ-VAE uses them.

Paper App. A.1: "The architecture of RQ-VAE is the same as VQGAN except for adding residual blocks
in the encoder and the decoder to reduce the spatial resolution of the code map more than VQGAN."
The extra levels come from a longer ``ch_mult``; nothing else changes.

Module and attribute names follow the official RQ-VAE checkpoint layout exactly
(``encoder.down.{i}.block.{j}.norm1``, ``decoder.up.{i}.upsample.conv``, ...), so that
``drr.tokenizer.official`` can load its state dict without renaming keys.

Layout, for ``L = len(ch_mult)`` levels and a square input of side ``R``:

    Encoder  conv_in -> down[0..L-1] (res blocks, attention where the side is in attn_resolutions,
             a stride-2 downsample except at the last level) -> mid (res, attn, res)
             -> norm_out -> swish -> conv_out                         (B, z_channels, R/2^(L-1), ...)
    Decoder  conv_in -> mid -> up[L-1..0] (num_res_blocks + 1 res blocks each, attention, a
             nearest x2 upsample except at level 0) -> norm_out -> swish -> conv_out  (B, C, R, R)
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

# --------------------------------------------------------------------------------------------------
# Building blocks
# --------------------------------------------------------------------------------------------------

def norm_groups(channels: int) -> int:
    """32 GroupNorm groups, as in VQGAN; a level narrower than 32 channels (only tiny CPU configs have
    one) gets one group per channel."""
    return min(32, channels)


def Normalize(channels: int) -> nn.GroupNorm:
    """GroupNorm with eps 1e-6, as in VQGAN (groups: `norm_groups`)."""
    return nn.GroupNorm(num_groups=norm_groups(channels), num_channels=channels, eps=1e-6, affine=True)


def swish(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(x)


class ResnetBlock(nn.Module):
    """norm -> swish -> conv3x3 -> norm -> swish -> dropout -> conv3x3, plus a (1x1) shortcut.

    Shape:
        x: (B, in_channels, H, W) -> (B, out_channels, H, W)
    """

    def __init__(self, in_channels: int, out_channels: int, dropout: float = 0.0):
        super().__init__()
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.norm1 = Normalize(in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, kernel_size=3, stride=1, padding=1)
        self.norm2 = Normalize(out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, kernel_size=3, stride=1, padding=1)
        if in_channels != out_channels:
            self.nin_shortcut = nn.Conv2d(in_channels, out_channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(swish(self.norm1(x)))
        h = self.conv2(self.dropout(swish(self.norm2(h))))
        if self.in_channels != self.out_channels:
            x = self.nin_shortcut(x)
        return x + h


class AttnBlock(nn.Module):
    """Single-head self-attention over the H*W positions, with 1x1-conv projections.

    Shape:
        x: (B, C, H, W) -> (B, C, H, W)
    """

    def __init__(self, channels: int):
        super().__init__()
        self.norm = Normalize(channels)
        self.q = nn.Conv2d(channels, channels, kernel_size=1)
        self.k = nn.Conv2d(channels, channels, kernel_size=1)
        self.v = nn.Conv2d(channels, channels, kernel_size=1)
        self.proj_out = nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, H, W = x.shape
        h = self.norm(x)
        # (B, C, H, W) -> (B, 1, H*W, C): one attention head over all positions
        q, k, v = (t.reshape(B, 1, C, H * W).transpose(-1, -2) for t in (self.q(h), self.k(h), self.v(h)))
        h = F.scaled_dot_product_attention(q, k, v)  # softmax(q k^T / sqrt(C)) v
        h = h.transpose(-1, -2).reshape(B, C, H, W)  # (B, 1, H*W, C) -> (B, C, H, W)
        return x + self.proj_out(h)


class Downsample(nn.Module):
    """3x3 conv with stride 2 after asymmetric zero padding (right and bottom by one pixel).

    Shape:
        x: (B, C, H, W) -> (B, C, H/2, W/2)
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=2, padding=0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (0, 1, 0, 1), mode="constant", value=0.0))


class Upsample(nn.Module):
    """Nearest-neighbour x2 upsampling followed by a 3x3 conv.

    Shape:
        x: (B, C, H, W) -> (B, C, 2H, 2W)
    """

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class MidBlock(nn.Module):
    """res -> attn -> res at the lowest resolution (keys ``mid.block_1``, ``mid.attn_1``, ``mid.block_2``)."""

    def __init__(self, channels: int, dropout: float):
        super().__init__()
        self.block_1 = ResnetBlock(channels, channels, dropout)
        self.attn_1 = AttnBlock(channels)
        self.block_2 = ResnetBlock(channels, channels, dropout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block_2(self.attn_1(self.block_1(x)))


class Level(nn.Module):
    """One resolution level: ``block`` (res blocks), ``attn`` (maybe empty), and a resampler.

    The resampler is stored as ``downsample`` (encoder) or ``upsample`` (decoder), the names the
    checkpoint uses; it is absent at the level that does not resample.
    """

    def __init__(self, channels_in: int, channels_out: int, n_blocks: int, with_attn: bool,
                 dropout: float, resample: str | None):
        super().__init__()
        self.block = nn.ModuleList()
        self.attn = nn.ModuleList()
        c = channels_in
        for _ in range(n_blocks):
            self.block.append(ResnetBlock(c, channels_out, dropout))
            c = channels_out
            if with_attn:
                self.attn.append(AttnBlock(c))
        self.resample = resample
        if resample == "down":
            self.downsample = Downsample(c)
        elif resample == "up":
            self.upsample = Upsample(c)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for j, block in enumerate(self.block):
            x = block(x)
            if len(self.attn) > 0:
                x = self.attn[j](x)
        if self.resample == "down":
            x = self.downsample(x)
        elif self.resample == "up":
            x = self.upsample(x)
        return x


# --------------------------------------------------------------------------------------------------
# Encoder and decoder
# --------------------------------------------------------------------------------------------------

class Encoder(nn.Module):
    """Image -> feature map E(X) (paper §3.1), before ``quant_conv``.

    Args:
        in_channels: image channels
        ch: base width; level i has ``ch * ch_mult[i]`` channels
        ch_mult: width multiplier per level; ``len(ch_mult) - 1`` stride-2 downsamplings
        num_res_blocks: residual blocks per level
        attn_resolutions: feature-map sides (pixels) at which levels get self-attention
        dropout: dropout probability in residual blocks
        z_channels: output channels
        resolution: input image side (pixels), used only to place the attention levels

    Shape:
        x: (B, in_channels, R, R) -> (B, z_channels, R / 2**(L-1), R / 2**(L-1))
    """

    def __init__(self, *, in_channels: int, ch: int, ch_mult, num_res_blocks: int, attn_resolutions,
                 dropout: float, z_channels: int, resolution: int):
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, ch, kernel_size=3, stride=1, padding=1)
        n_levels = len(ch_mult)
        in_mult = (1,) + tuple(ch_mult)
        side = resolution
        self.down = nn.ModuleList()
        for i in range(n_levels):
            self.down.append(Level(ch * in_mult[i], ch * ch_mult[i], num_res_blocks,
                                   with_attn=side in attn_resolutions, dropout=dropout,
                                   resample="down" if i != n_levels - 1 else None))
            if i != n_levels - 1:
                side //= 2
        block_in = ch * ch_mult[-1]
        self.mid = MidBlock(block_in, dropout)
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, z_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv_in(x)
        for level in self.down:
            h = level(h)
        h = self.mid(h)
        return self.conv_out(swish(self.norm_out(h)))


class Decoder(nn.Module):
    """Feature map (after ``post_quant_conv``) -> image. Arguments as for `Encoder`.

    ``up[i]`` is the level at the same resolution as ``encoder.down[i]``; it runs from i = L-1 (the
    lowest resolution) down to 0, and has ``num_res_blocks + 1`` residual blocks.

    Shape:
        z: (B, z_channels, h, w) -> (B, in_channels, h * 2**(L-1), w * 2**(L-1))
    """

    def __init__(self, *, in_channels: int, ch: int, ch_mult, num_res_blocks: int, attn_resolutions,
                 dropout: float, z_channels: int, resolution: int):
        super().__init__()
        n_levels = len(ch_mult)
        block_in = ch * ch_mult[-1]
        side = resolution // 2 ** (n_levels - 1)
        self.conv_in = nn.Conv2d(z_channels, block_in, kernel_size=3, stride=1, padding=1)
        self.mid = MidBlock(block_in, dropout)
        levels: list[Level] = []
        for i in reversed(range(n_levels)):
            block_out = ch * ch_mult[i]
            levels.append(Level(block_in, block_out, num_res_blocks + 1,
                                with_attn=side in attn_resolutions, dropout=dropout,
                                resample="up" if i != 0 else None))
            block_in = block_out
            if i != 0:
                side *= 2
        self.up = nn.ModuleList(reversed(levels))  # index i = level i, as in the checkpoint
        self.norm_out = Normalize(block_in)
        self.conv_out = nn.Conv2d(block_in, in_channels, kernel_size=3, stride=1, padding=1)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.mid(self.conv_in(z))
        for i in reversed(range(len(self.up))):
            h = self.up[i](h)
        return self.conv_out(swish(self.norm_out(h)))
