"""The fast training path does the same maths as the plain one (scripts/bench.py times them against each other)."""

from functools import partial

import pytest
import torch
import torch.nn as nn

from sarnet.bench import NaiveConvVAE, NaiveSarNetVAE, reference_step
from sarnet.losses import ReconstructionLoss
from sarnet.module import SarnetModule
from sarnet.nn import ConvVAE, SarNetVAE, SemiDense


def test_conv_encoder_and_decoder_equal_their_sequential_forward():
    torch.manual_seed(0)
    vae, x = ConvVAE(16), torch.rand(5, 1, 28, 28)
    h = vae.encoder.body(x)  # the nn.Sequential, NCHW, the last conv as a conv
    for fast, plain in zip(vae.encoder(x), (vae.encoder.fc_mu(h), vae.encoder.fc_logvar(h))):
        torch.testing.assert_close(fast, plain, rtol=1e-5, atol=1e-6)
    z = torch.randn(5, 16)
    fast = vae.decoder(z)
    torch.testing.assert_close(fast, nn.Sequential.forward(vae.decoder, z), rtol=1e-5, atol=1e-6)
    assert fast.is_contiguous() and fast.shape == (5, 1, 28, 28)


def trajectory(model, step, steps=6):
    """The losses of `steps` calls of step(i), each with the same reparameterisation noise in either loop, and the
    gradients of the first."""
    losses, grads = [], None
    for i in range(steps):
        torch.manual_seed(i)
        losses.append(step(i).item())
        grads = grads or {n: p.grad.clone() for n, p in model.named_parameters()}
    return losses, grads


def plain_losses(net, x):
    """The thesis notebook's loop (sarnet.bench.reference_step: W*M in every forward, plain convs, sigmoid + BCELoss
    + KL, torch.optim.Adam) on a copy of net's weights, without the project's module."""
    plain = (NaiveSarNetVAE if isinstance(net, SarNetVAE) else NaiveConvVAE)(net)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-2)
    return trajectory(plain, lambda i: reference_step(plain, opt, x))


def project_losses(net, x):
    """What train.py runs: SarnetModule, the fast convs, BCE on logits, fused Adam."""
    module = SarnetModule(net, ReconstructionLoss(), partial(torch.optim.Adam, lr=1e-2, fused=True))
    module.log = lambda *a, **k: None
    opt = module.configure_optimizers()

    def step(i):
        loss = module.training_step((x, None), i)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return loss
    return trajectory(net, step)


@pytest.mark.parametrize("make", [lambda: SarNetVAE(8), lambda: ConvVAE(8)], ids=["sarnet_vae", "vae"])
def test_fast_training_path_follows_the_plain_loss_trajectory(make):
    torch.manual_seed(0)
    x = torch.rand(16, 1, 28, 28)
    plain, fast = make(), make()
    fast.load_state_dict(plain.state_dict())
    (expected, plain_grads), (got, fast_grads) = plain_losses(plain, x), project_losses(fast, x)
    assert expected[0] != expected[-1]  # it trains: the trajectory is not flat
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=0)
    # Gradients (of the first step, same weights) rather than weights after several steps: Adam moves a weight
    # whose gradient is ~0 by about +-lr on the sign of float noise, so exact implementations drift apart there.
    masks = {f"{n}.weight": m.mask for n, m in fast.named_modules() if isinstance(m, SemiDense)}
    for name, g in plain_grads.items():
        assert (fast_grads[name] * masks.get(name, 1) - g).norm() <= 1e-5 * g.norm(), name
