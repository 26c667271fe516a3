"""Per-image reconstruction losses (the `loss` config group) and the VAE's KL term."""

import torch
import torch.nn as nn
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

KINDS = ("bce", "power")
REDUCTIONS = ("sum", "mean")


class ReconstructionLoss(nn.Module):
    """Per-image loss, shape (B,).

    kind="bce":   binary cross-entropy on logits against continuous targets in [0, 1] (the reference's VAE loss;
                  not a proper likelihood unless the data is binarized). Needs a sigmoid-output model.
    kind="power": |y - x|^power (power 1 = L1, 2 = MSE) on the activated output.
    reduction:    over the pixels of an image; "sum" for ELBO-style losses, "mean" as the simple-SarNET reference.
    ssim_weight:  adds ssim_weight * (1 - SSIM(y, x)) (11x11 Gaussian window, sigma 1.5, data_range 1).
    """

    def __init__(self, kind: str = "bce", power: float = 2.0, reduction: str = "sum", ssim_weight: float = 0.0):
        super().__init__()
        if kind not in KINDS:
            raise ValueError(f"loss.kind={kind!r} is not one of {KINDS}")
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss.reduction={reduction!r} is not one of {REDUCTIONS}")
        if power <= 0:
            raise ValueError(f"loss.power={power} must be > 0 (1 = L1, 2 = MSE)")
        self.kind, self.power, self.reduction, self.ssim_weight = kind, power, reduction, ssim_weight

    @property
    def needs_sigmoid(self) -> bool:
        return self.kind == "bce"

    def forward(self, logits: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            per_pixel = (output - target).abs().pow(self.power)
        per_pixel = per_pixel.flatten(1)
        loss = per_pixel.sum(1) if self.reduction == "sum" else per_pixel.mean(1)
        if self.ssim_weight:
            loss = loss + self.ssim_weight * (1 - ssim(output, target, data_range=1.0, reduction="none"))
        return loss


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, summed over latent dimensions."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
