"""Helpers shared by the sampling CLIs (generate, speed, inpaint): loading a transformer with the
tokenizer it was trained with, the device and precision, per-sample conditions, decoding code
maps to uint8 images and writing PNG grids.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drr.core.errors import DrrError
from drr.core.files import atomic_path

PRECISIONS = ("fp32", "bf16")


def pick_device(device: str | None = None) -> torch.device:
    """CUDA if available (or `device` if given), else CPU."""
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def autocast(device: torch.device, precision: str):
    """bf16 autocast for precision 'bf16' (on CUDA, or on CPU when asked); fp32: no-op."""
    if precision not in PRECISIONS:
        raise DrrError(f"--precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@dataclass
class Models:
    transformer: torch.nn.Module
    tokenizer: torch.nn.Module
    transformer_ckpt: dict
    transformer_sha256: str
    tokenizer_sha256: str
    transformer_path: Path
    tokenizer_path: Path

    @property
    def code_shape(self) -> tuple[int, int, int]:
        return tuple(self.transformer.config.code_shape)


def load_models(tokenizer: Path, transformer: Path, device: torch.device,
                cfg: dict | None = None) -> Models:
    """Load the transformer and its tokenizer; refuse a tokenizer file whose sha256 is not the
    transformer checkpoint's 'tokenizer_sha256', and (given `cfg`) a transformer whose model
    config is not the one `cfg` describes."""
    from drr.tokenizer.io import load_tokenizer
    from drr.transformer.io import load_transformer

    tokenizer, transformer = Path(tokenizer), Path(transformer)
    model, ckpt, tr_sha = load_transformer(transformer, device)
    tok, _, tok_sha = load_tokenizer(tokenizer, device)
    want = ckpt.get("tokenizer_sha256")
    if want != tok_sha:
        raise DrrError(f"{tokenizer}: sha256 {tok_sha[:16]}… is not field 'tokenizer_sha256' "
                       f"{str(want)[:16]}… of {transformer}; pass the tokenizer the transformer "
                       f"was trained with")
    if cfg is not None:
        check_model_config(model, cfg, transformer)
    return Models(model, tok, ckpt, tr_sha, tok_sha, transformer, tokenizer)


def check_model_config(model, cfg: dict, path: Path) -> None:
    """The config's transformer.model/tokenizer.model sizes must be the checkpoint's (dropout aside:
    it does nothing at inference)."""
    from drr.transformer.model import TransformerConfig

    want = TransformerConfig.from_experiment(cfg).to_dict()
    have = model.config.to_dict()
    for key in want:
        if key != "dropout" and want[key] != have.get(key):
            raise DrrError(f"{path}: model_config '{key}' is {have.get(key)!r}, the config gives "
                           f"{want[key]!r}; pass the config the transformer was trained with")


class Conditions:
    """Per-sample conditions of a generation run, a pure function of the global sample index.

    class + balanced: class i % num_classes; text + eval_captions: caption i % n of a code map,
    tokenised with the BPE tokenizer; cond type none: zeros.
    """

    def __init__(self, cfg: dict, text_tokenizer: Path | None = None, captions: Path | None = None):
        cond = cfg["transformer"]["model"]["cond"]
        mode = cfg["generation"]["conditions"]
        self.type = cond["type"]
        self.num_classes = cond["num_classes"]
        self.captions: list[str] | None = None
        self.tokens: np.ndarray | None = None
        self.source: dict = {"type": self.type, "conditions": mode}
        if self.type == "class":
            if mode != "balanced":
                raise DrrError(f"generation.conditions: {mode!r} is for text models; "
                               "class-conditional models use 'balanced'")
        elif self.type == "text":
            if mode != "eval_captions":
                raise DrrError(f"generation.conditions: {mode!r} is for class models; "
                               "text-conditional models use 'eval_captions'")
            if text_tokenizer is None or captions is None:
                raise DrrError("transformer.model.cond.type is 'text': pass --text-tokenizer "
                               "and --captions (the eval split's code map)")
            from drr.codes.store import CodeMap
            from drr.core.files import sha256_file
            from drr.text import TextTokenizer

            tok = TextTokenizer.load(text_tokenizer)
            tok.check_vocab(cond["vocab_size"], "transformer.model.cond.vocab_size")
            self.captions = CodeMap(captions).captions
            if not self.captions or not any(self.captions):
                raise DrrError(f"{captions}: field 'caption' is empty; eval_captions needs "
                               "a code map with captions")
            self.tokens = tok.encode(self.captions, cond["length"])
            self.source.update(captions=str(captions), num_captions=len(self.captions),
                               text_tokenizer=str(text_tokenizer),
                               text_tokenizer_sha256=sha256_file(text_tokenizer))

    def __call__(self, indices: np.ndarray) -> torch.Tensor:
        """(B, L) int64 conditions of the samples with these global indices."""
        indices = np.asarray(indices, dtype=np.int64)
        if self.type == "class":
            return torch.from_numpy(indices % self.num_classes)[:, None]
        if self.type == "text":
            return torch.from_numpy(self.tokens[indices % len(self.tokens)])
        return torch.zeros(len(indices), 1, dtype=torch.long)

    def labels(self, indices: np.ndarray) -> np.ndarray | None:
        if self.type != "class":
            return None
        return (np.asarray(indices, dtype=np.int64) % self.num_classes).astype(np.int64)

    def caption_texts(self, indices: np.ndarray) -> np.ndarray | None:
        if self.type != "text":
            return None
        return np.array([self.captions[i % len(self.captions)] for i in indices], dtype=str)


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


def save_grid(images: np.ndarray, path: Path, nrow: int) -> None:
    """uint8 (N, R, R, 3) -> PNG grid with `nrow` images per row, written atomically."""
    import torchvision
    from PIL import Image

    if len(images) == 0:
        raise DrrError(f"{path}: no images for the grid")
    grid = torchvision.utils.make_grid(torch.from_numpy(np.ascontiguousarray(images))
                                       .permute(0, 3, 1, 2), nrow=nrow, padding=2, pad_value=255)
    with atomic_path(path) as tmp:
        Image.fromarray(grid.permute(1, 2, 0).numpy()).save(tmp, format="PNG")


def grid_columns(n: int) -> int:
    """Images per row of a roughly square grid."""
    return max(1, int(np.ceil(np.sqrt(n))))
