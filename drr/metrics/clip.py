"""CLIP score (paper Table 2): open-clip ViT-B/32 with OpenAI's weights, read from a file only.

    clip_score = mean_i max(cos(E_img(x_i), E_txt(c_i)), 0)

over all samples x_i and their captions c_i: the cosine similarity of the L2-normalised image and
text embeddings, clipped at 0, averaged. No 2.5 factor (Hessel et al.'s CLIPScore) and no x100:
the paper's "0.26"-style scale. Images go through open-clip's own evaluation preprocessing for the
model (PIL bicubic resize of the shorter side to 224, centre crop, OpenAI mean/std); captions
through open-clip's own tokenizer (the BPE vocabulary shipped with the package, 77 tokens,
truncated).

Weights: ``metrics.clip_weights`` when set (a missing file is an error naming that key), else
``<metrics.weights_dir>/open_clip/<clip_model>-openai.{pt,safetensors,bin}`` (placed by
``python -m drr.metrics.weights``). When neither exists the score is not computed and the result row
says ``n/a (CLIP weights not found: ...)``, so an offline run still scores FID; a table that needs
the CLIP score shows the reason. The OpenAI weights were trained with QuickGELU, so the model is
built with ``force_quick_gelu=True``.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from drr.core.device import pick_device
from drr.core.errors import DrrError

CLIP_DIR = "open_clip"
CLIP_TAG = "openai"
CLIP_EXTS = (".pt", ".safetensors", ".bin")


def default_clip_path(metrics_cfg: dict) -> Path | None:
    d = Path(metrics_cfg["weights_dir"]) / CLIP_DIR
    for ext in CLIP_EXTS:
        p = d / f"{metrics_cfg['clip_model']}-{CLIP_TAG}{ext}"
        if p.is_file():
            return p
    return None


def find_clip_weights(metrics_cfg: dict) -> tuple[Path | None, str | None]:
    """(path, None), or (None, reason) when no weights are configured or placed.

    An explicit ``metrics.clip_weights`` that does not exist raises DrrError.
    """
    explicit = metrics_cfg.get("clip_weights")
    if explicit:
        p = Path(explicit)
        if not p.is_file():
            raise DrrError(f"metrics.clip_weights: {p} not found")
        return p, None
    p = default_clip_path(metrics_cfg)
    if p is None:
        where = Path(metrics_cfg["weights_dir"]) / CLIP_DIR / f"{metrics_cfg['clip_model']}-{CLIP_TAG}.pt"
        return None, (f"CLIP weights not found: metrics.clip_weights is null and {where} is absent; "
                      f"place them with python -m drr.metrics.weights")
    return p, None


def is_torchscript(path) -> bool:
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("constants.pkl") or "/code/" in n for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


@dataclass
class Clip:
    model: torch.nn.Module
    preprocess: object        # PIL image -> float tensor (3, 224, 224)
    tokenizer: object         # list[str] -> int64 (B, 77)
    id: str                   # e.g. 'ViT-B-32/openai/sha256-<16 hex>'
    device: torch.device


def preprocess_for(model):
    from open_clip.transform import PreprocessCfg, image_transform_v2

    return image_transform_v2(PreprocessCfg(**model.visual.preprocess_cfg), is_train=False)


def load_clip(metrics_cfg: dict, device=None) -> tuple[Clip | None, str | None]:
    """(Clip, None) or (None, 'n/a reason') when no weights are available; never downloads."""
    import open_clip

    from drr.core.files import sha256_file

    path, reason = find_clip_weights(metrics_cfg)
    if path is None:
        return None, reason
    name = metrics_cfg["clip_model"]
    dev = pick_device(device)
    try:
        model = open_clip.create_model(name, pretrained=str(path), force_quick_gelu=True,
                                       weights_only=not is_torchscript(path), device=dev)
    except (RuntimeError, OSError, ValueError, KeyError) as e:
        raise DrrError(f"metrics.clip_weights: {path} does not load into open-clip {name} "
                       f"({str(e).splitlines()[0][:200]})") from None
    model.eval()
    sha = sha256_file(path)
    return Clip(model, preprocess_for(model), open_clip.get_tokenizer(name),
                f"{name}/{CLIP_TAG}/sha256-{sha[:16]}", dev), None


@torch.no_grad()
def clip_cosines(clip: Clip, images: torch.Tensor, captions: list[str]) -> np.ndarray:
    """Cosine similarity per (image, caption) pair; images uint8 (B, 3, H, W)."""
    from PIL import Image

    pixels = torch.stack([clip.preprocess(Image.fromarray(im.permute(1, 2, 0).numpy()))
                          for im in images.cpu()]).to(clip.device)
    tokens = clip.tokenizer(list(captions)).to(clip.device)
    img = clip.model.encode_image(pixels).float()
    txt = clip.model.encode_text(tokens).float()
    img = img / img.norm(dim=-1, keepdim=True)
    txt = txt / txt.norm(dim=-1, keepdim=True)
    return (img * txt).sum(-1).cpu().numpy().astype(np.float64)


def clip_score(cosines: np.ndarray) -> float:
    """mean of max(cos, 0) (no 2.5 or 100 factor)."""
    return float(np.maximum(np.asarray(cosines, np.float64), 0.0).mean())
