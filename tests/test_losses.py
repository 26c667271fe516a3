"""Losses: SSIM as the reference's pytorch_msssim (valid 11x11 Gaussian window), per-image shapes, KL."""

import pytest
import torch
from torchmetrics.functional.image import structural_similarity_index_measure as tm_ssim

from sarnet.losses import ReconstructionLoss, kl_divergence, ssim


@pytest.mark.parametrize("shape, dtype, noise, atol", [((8, 1, 28, 28), torch.float64, 0.3, 1e-12),
                                                        ((4, 3, 20, 33), torch.float32, 0.1, 1e-5)])
def test_ssim_equals_the_unpadded_part_of_torchmetrics_ssim_map(shape, dtype, noise, atol):
    # torchmetrics reflect-pads by 5 and filters with a full 11x11 conv2d; away from the pad its map is the
    # valid-window SSIM map pytorch_msssim (the reference) averages. Same maths, independent code; multichannel
    # and non-square too.
    torch.manual_seed(0)
    x = torch.rand(shape, dtype=dtype)
    y = (x + noise * torch.randn_like(x)).clamp(0, 1)
    _, full = tm_ssim(x, y, data_range=1.0, reduction="none", return_full_image=True)
    torch.testing.assert_close(ssim(x, y), full[..., 5:-5, 5:-5].flatten(1).mean(1), rtol=0, atol=atol)
    torch.testing.assert_close(ssim(x, x), torch.ones(len(x), dtype=dtype), rtol=0, atol=atol)
    assert (ssim(x, y) < 1 - noise / 2).all()  # the noise shows: 0.76 and 0.95 at most
    half = ssim(x.bfloat16(), y.bfloat16())  # computed in float32 from the bfloat16 inputs
    assert half.dtype == torch.float32
    torch.testing.assert_close(half, ssim(x.bfloat16().float(), y.bfloat16().float()))


def test_ssim_gradient_matches_finite_differences():
    torch.manual_seed(1)
    x = torch.rand(2, 1, 14, 12, dtype=torch.float64, requires_grad=True)
    y = torch.rand(2, 1, 14, 12, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda a: ssim(a, y), (x,))


def test_reconstruction_losses_and_kl_are_per_image():
    torch.manual_seed(2)
    x, out = torch.rand(5, 1, 28, 28), torch.rand(5, 1, 28, 28)
    l1_ssim = ReconstructionLoss(kind="power", power=1.0, reduction="mean", ssim_weight=1.0)(out, out, x)
    expected = (out - x).abs().flatten(1).mean(1) + 1 - ssim(out, x)
    torch.testing.assert_close(l1_ssim, expected)
    bce = ReconstructionLoss()(out, torch.sigmoid(out), x)
    assert bce.shape == (5,)
    expected_bce = torch.nn.functional.binary_cross_entropy_with_logits(out[0], x[0], reduction="sum")
    torch.testing.assert_close(bce[0], expected_bce)
    mu, logvar = torch.tensor([[1.0, 0.0], [0.0, 0.0]]), torch.tensor([[0.0, 1.0], [0.0, 0.0]])
    # the closed form 0.5 * sum(mu^2 + var - 1 - logvar), per image
    torch.testing.assert_close(kl_divergence(mu, logvar), torch.tensor([0.5 * (1 + (torch.e - 2)), 0.0]))
