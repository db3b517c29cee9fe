"""RQ-VAE training losses (paper App. A.1, following VQGAN): reconstruction + commitment + LPIPS +
PatchGAN hinge loss with VQGAN's adaptive weight.

LPIPS needs an ImageNet-pretrained VGG16. The `lpips` package ships LPIPS' own linear weights; the
VGG16 backbone is loaded from `tokenizer.loss.vgg16_weights` (torchvision's vgg16 state dict, e.g.
vgg16-397923af.pth) or, when that is null, through torchvision's usual download into the torch hub
cache. With no internet and no file, a perceptual_weight > 0 is an error that says so.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from drr.core.errors import DrrError

# ---------------------------------------------------------------------------------------------
# Perceptual loss
# ---------------------------------------------------------------------------------------------

def build_lpips(vgg16_weights: str | None) -> nn.Module:
    """LPIPS(vgg) with its shipped linear layers and a VGG16 backbone from a file or the hub cache."""
    import lpips
    import torchvision

    model = lpips.LPIPS(net="vgg", pretrained=True, pnet_rand=True, verbose=False)
    if vgg16_weights is not None:
        try:
            state = torch.load(vgg16_weights, map_location="cpu", weights_only=True)
        except FileNotFoundError:
            raise DrrError(f"{vgg16_weights}: file not found (tokenizer.loss.vgg16_weights)") from None
        vgg = torchvision.models.vgg16()
        try:
            vgg.load_state_dict(state)
        except RuntimeError as e:
            raise DrrError(f"{vgg16_weights}: not a torchvision vgg16 state dict "
                           f"(tokenizer.loss.vgg16_weights): {str(e).splitlines()[0]}") from None
    else:
        try:
            vgg = torchvision.models.vgg16(weights=torchvision.models.VGG16_Weights.IMAGENET1K_V1)
        except Exception as e:  # no internet: urllib.error.URLError and friends
            raise DrrError("tokenizer.loss.perceptual_weight > 0 needs VGG16 weights: set "
                           "tokenizer.loss.vgg16_weights to vgg16-397923af.pth (download failed: "
                           f"{type(e).__name__})") from None
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

    def __init__(self, loss_cfg: dict, in_channels: int = 3):
        super().__init__()
        self.cfg = loss_cfg
        self.lpips = build_lpips(loss_cfg["vgg16_weights"]) if loss_cfg["perceptual_weight"] > 0 else None
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
