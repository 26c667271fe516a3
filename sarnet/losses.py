"""Per-image reconstruction losses (the `loss` config group) and the VAE's KL term."""

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

KINDS = ("bce", "power")
REDUCTIONS = ("sum", "mean")


class ReconstructionLoss(nn.Module):
    """Per-image loss, shape (B,).

    kind="bce":   binary cross-entropy on logits against continuous targets in [0, 1] (the reference's VAE loss;
                  not a proper likelihood unless the data is binarized). Needs a sigmoid-output model.
    kind="power": |y - x|^power (power 1 = L1, 2 = MSE) on the activated output.
    reduction:    over the pixels of an image; "sum" for ELBO-style losses, "mean" as the simple-SarNET reference.
    ssim_weight:  adds ssim_weight * (1 - SSIM(y, x)), SSIM as the reference's pytorch_msssim.ssim (see `ssim`).
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

    needs_softmax = False

    def forward(self, logits: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.kind == "bce":
            per_pixel = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
        else:
            per_pixel = (output - target).abs().pow(self.power)
        per_pixel = per_pixel.flatten(1)
        loss = per_pixel.sum(1) if self.reduction == "sum" else per_pixel.mean(1)
        if self.ssim_weight:
            loss = loss + self.ssim_weight * (1 - ssim(output, target))
        return loss


class CrossEntropyLoss(nn.Module):
    """Per-image cross-entropy of C-class pixels (the classification SarNET, docs/reference.md §3.1), shape (B,).

    logits: (B, C, H, W), softmax over C. target: (B, C, H, W) class probabilities, -sum_c t_c log softmax_c per
    pixel: a one-hot target (data.quantize) gives the usual CE. A grey image x in [0, 1], (B, 1, H, W), against
    C = 2 logits is the soft target (1 - x, x): the reference's "probability" variant.
    reduction: over an image's pixels ("mean" = torch's CrossEntropyLoss per image).
    ssim_weight: adds ssim_weight * (1 - SSIM) of the class-1 probability against the target's class 1.
    """

    needs_sigmoid = False
    needs_softmax = True

    def __init__(self, reduction: str = "mean", ssim_weight: float = 0.0):
        super().__init__()
        if reduction not in REDUCTIONS:
            raise ValueError(f"loss.reduction={reduction!r} is not one of {REDUCTIONS}")
        self.reduction, self.ssim_weight = reduction, ssim_weight

    def forward(self, logits: torch.Tensor, output: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if target.ndim == 4 and target.shape[1] == 1 and logits.shape[1:2] == (2,):
            target = torch.cat([1 - target, target], dim=1)
        if logits.shape != target.shape or logits.ndim != 4 or logits.shape[1] < 2:
            raise ValueError(f"cross-entropy needs logits and targets of one shape (B, C >= 2, H, W), or 2 logits "
                             f"and a grey target (B, 1, H, W); got {tuple(logits.shape)} and {tuple(target.shape)}: "
                             f"use data.quantize = the net's C")
        per_pixel = -(target * F.log_softmax(logits, dim=1)).sum(1).flatten(1)
        loss = per_pixel.sum(1) if self.reduction == "sum" else per_pixel.mean(1)
        if self.ssim_weight:
            loss = loss + self.ssim_weight * (1 - ssim(output[:, 1:2], target[:, 1:2]))
        return loss


@functools.lru_cache(maxsize=16)
def gaussian_blur_matrix(size: int, win: int = 11, sigma: float = 1.5, dtype=torch.float32, device="cpu"):
    """Valid (unpadded) 1-D Gaussian filtering of a length-`size` signal as a (size - win + 1, size) band matrix.
    Cached: a training step reuses the same two small matrices on its device instead of rebuilding them."""
    if size < win:
        raise ValueError(f"SSIM needs images of at least {win}x{win} pixels (its Gaussian window), got side {size}")
    g = torch.exp(-((torch.arange(win, dtype=torch.float64) - win // 2) ** 2) / (2 * sigma**2))
    g = g / g.sum()
    rows = size - win + 1
    cols = torch.arange(rows)[:, None] + torch.arange(win)[None, :]
    band = torch.zeros(rows, size, dtype=torch.float64).scatter_(1, cols, g.expand(rows, win))
    return band.to(dtype=dtype, device=device)


def ssim(x: torch.Tensor, y: torch.Tensor, data_range: float = 1.0, win: int = 11, sigma: float = 1.5,
         k1: float = 0.01, k2: float = 0.03) -> torch.Tensor:
    """Per-image SSIM of (B, C, H, W) images, as pytorch_msssim.ssim (the reference's loss): 11x11 Gaussian window
    with sigma 1.5, valid filtering (no padding: an 18x18 map for 28x28 images), mean over channels and map.

    The separable Gaussian filter is two small matmuls with band matrices (K_h X K_w^T): on CPU this is ~77x
    cheaper than a 121-tap conv2d, which was 85 % of a simple-SarNET training step.
    """
    if x.dtype in (torch.float16, torch.bfloat16):  # E[x^2] - E[x]^2 next to C2 = 9e-4 needs more bits
        x, y = x.float(), y.float()
    kh = gaussian_blur_matrix(x.shape[-2], win, sigma, x.dtype, x.device)
    kw = gaussian_blur_matrix(x.shape[-1], win, sigma, x.dtype, x.device)
    mu_x, mu_y, xx, yy, xy = (kh @ torch.stack([x, y, x * x, y * y, x * y]) @ kw.T).unbind(0)
    c1, c2 = (k1 * data_range) ** 2, (k2 * data_range) ** 2
    sigma_x, sigma_y, sigma_xy = xx - mu_x**2, yy - mu_y**2, xy - mu_x * mu_y
    cs = (2 * sigma_xy + c2) / (sigma_x + sigma_y + c2)
    return ((2 * mu_x * mu_y + c1) / (mu_x**2 + mu_y**2 + c1) * cs).flatten(1).mean(1)


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, I)) per image, summed over latent dimensions."""
    return -0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(1)
