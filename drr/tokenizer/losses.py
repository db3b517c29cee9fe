"""RQ-VAE training losses (paper App. A.1, following VQGAN): reconstruction + commitment + LPIPS +
PatchGAN hinge loss with VQGAN's adaptive weight.

LPIPS needs an ImageNet-pretrained VGG16. The `lpips` package ships LPIPS' own linear weights; the
VGG16 backbone (torchvision's vgg16-397923af.pth) is read from `tokenizer.loss.vgg16_weights`, or,
when that is null, from ``<metrics.weights_dir>/torchvision/``, where ``python -m drr.metrics.weights
--lpips`` (the workflow's local rule lpips_weights, before training) places it with the other
network weights: training never downloads. Without the file a perceptual_weight > 0 is a one-line
error that says how to place it.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F

from drr.core.errors import DrrError

# ---------------------------------------------------------------------------------------------
# Perceptual loss
# ---------------------------------------------------------------------------------------------

def build_lpips(vgg16_weights: str | None, weights_dir=None) -> nn.Module:
    """LPIPS(vgg) with its shipped linear layers and the VGG16 backbone from `vgg16_weights`, or
    where drr.metrics.weights places it in `weights_dir` when that is None."""
    import lpips
    import torchvision

    from drr.core.checkpoint import load_file
    from drr.metrics.weights import vgg16_path

    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    if vgg16_weights is None:
        path = vgg16_path(weights_dir) if weights_dir is not None else None
        if path is None or not path.is_file():
            raise DrrError(f"{path or 'metrics.weights_dir'}: torchvision's VGG16 weights for LPIPS "
                           "(tokenizer.loss.perceptual_weight > 0) are not in place: run python -m "
                           "drr.metrics.weights --config <experiment> --lpips (the workflow's rule "
                           "lpips_weights), or set tokenizer.loss.vgg16_weights")
        what = "torchvision vgg16 state dict"
    else:
        path, what = Path(vgg16_weights), "torchvision vgg16 state dict (tokenizer.loss.vgg16_weights)"
    state = load_file(path, what)
    vgg = torchvision.models.vgg16()
    try:
        vgg.load_state_dict(state)
    except (RuntimeError, TypeError, AttributeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise DrrError(f"{path}: not a {what}: {first[:160]}") from None
    # lpips' backbone keeps torchvision's layer indices as module names inside slice1..slice5.
    for k in range(1, 6):
        for name, _ in getattr(model.net, f"slice{k}").named_children():
            getattr(model.net, f"slice{k}")._modules[name] = vgg.features[int(name)]
    model.eval().requires_grad_(False)
    return model


# ---------------------------------------------------------------------------------------------
# PatchGAN discriminator (pix2pix), hinge loss, adaptive weight
# ---------------------------------------------------------------------------------------------

class PatchDiscriminator(nn.Module):
    """Shape: (B, 3, R, R) images in [-1, 1] -> (B, 1, R', R') patch logits."""

    def __init__(self, in_channels: int = 3, ch: int = 64, layers: int = 2):
        super().__init__()
        seq = [nn.Conv2d(in_channels, ch, 4, 2, 1), nn.LeakyReLU(0.2, True)]
        mult = 1
        for n in range(1, layers + 1):
            prev, mult = mult, min(2 ** n, 8)
            stride = 2 if n < layers else 1
            seq += [nn.Conv2d(ch * prev, ch * mult, 4, stride, 1, bias=False),
                    nn.BatchNorm2d(ch * mult), nn.LeakyReLU(0.2, True)]
        seq += [nn.Conv2d(ch * mult, 1, 4, 1, 1)]
        self.main = nn.Sequential(*seq)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, 0.0, 0.02)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.normal_(m.weight, 1.0, 0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.main(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    return 0.5 * (F.relu(1.0 - logits_real).mean() + F.relu(1.0 + logits_fake).mean())


def adaptive_weight(nll: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """VQGAN's balance of the adversarial term: ||dL_nll/dw|| / (||dL_g/dw|| + 1e-4) at the
    decoder's last layer w, clamped to [0, max_weight], no gradient."""
    g_nll = torch.autograd.grad(nll, last_layer, retain_graph=True)[0]
    g_adv = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    w = g_nll.norm() / (g_adv.norm() + 1e-4)
    return w.clamp(0.0, max_weight).detach()


class TokenizerLoss(nn.Module):
    """Generator- and discriminator-side losses from the `tokenizer.loss` config section."""

    def __init__(self, loss_cfg: dict, in_channels: int = 3, weights_dir=None):
        super().__init__()
        self.cfg = loss_cfg
        self.lpips = (build_lpips(loss_cfg["vgg16_weights"], weights_dir)
                      if loss_cfg["perceptual_weight"] > 0 else None)
        self.disc = (PatchDiscriminator(in_channels, loss_cfg["disc_ch"], loss_cfg["disc_layers"])
                     if loss_cfg["disc_weight"] > 0 else None)

    def gan_active(self, step: int) -> bool:
        return self.disc is not None and step >= self.cfg["disc_start"]

    def generator_loss(self, x, recon, commitment, step: int, last_layer) -> tuple[torch.Tensor, dict]:
        """Total generator loss and its parts. x, recon: (B, C, R, R) in [-1, 1]."""
        rec = F.mse_loss(recon, x)
        nll = rec
        logs = {"rec": rec.detach(), "commit": commitment.detach()}
        if self.lpips is not None:
            p = self.lpips(recon.float(), x.float()).mean()
            nll = nll + self.cfg["perceptual_weight"] * p
            logs["lpips"] = p.detach()
        loss = nll + self.cfg["commitment_weight"] * commitment
        if self.gan_active(step):
            g = -self.disc(recon).mean()
            w = adaptive_weight(nll, g, last_layer) * self.cfg["disc_weight"]
            loss = loss + w * g
            logs.update(g=g.detach(), d_weight=w)
        return loss, logs

    def discriminator_loss(self, x, recon) -> torch.Tensor:
        return hinge_d_loss(self.disc(x), self.disc(recon.detach()))
