"""Code maps to images: the tokenizer's decoder in fp32, in fixed-size chunks, to uint8 NHWC arrays
(the ADM evaluator's layout)."""

from __future__ import annotations

import numpy as np
import torch


def to_uint8(images: torch.Tensor) -> np.ndarray:
    """Float images in [-1, 1] (B, 3, R, R) -> uint8 NHWC numpy (clamped, rounded)."""
    x = ((images.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).contiguous().cpu().numpy()


# The tokenizer decodes in chunks of this many code maps, the last one padded: a sample's pixels
# then never depend on the generation batch size (a conv's float rounding changes with the batch
# size, not with the other rows of a batch). 20 divides the paper's batch of 100.
DECODE_CHUNK = 20


@torch.inference_mode()
def decode_images(tokenizer, codes: torch.Tensor, code_shape, chunk: int = DECODE_CHUNK
                  ) -> np.ndarray:
    """Codes (B, N, D) -> uint8 (B, R, R, 3), via the tokenizer's decoder in fp32, in padded
    chunks of `chunk` code maps (see DECODE_CHUNK)."""
    h, w, d = code_shape
    codes = codes.reshape(len(codes), h, w, d)
    out = []
    with torch.autocast(codes.device.type, enabled=False):
        for i in range(0, len(codes), chunk):
            part = codes[i:i + chunk]
            pad = chunk - len(part)
            if pad:
                part = torch.cat([part, part[:1].expand(pad, -1, -1, -1)])
            out.append(to_uint8(tokenizer.decode_codes(part)[:chunk - pad]))
    return np.concatenate(out) if out else np.zeros((0, 0, 0, 3), np.uint8)
