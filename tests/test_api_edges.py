"""The library API at its edges (tests/bad_inputs.py API): a request the sampler cannot serve is one ValueError
naming the argument, never a raw IndexError, TypeError or silently wrong images."""

import pytest
import torch

import sarnet.sampling as sampling
from tests.bad_inputs import API


@pytest.fixture(scope="module")
def nets():
    from sarnet.nn import ConvVAE, SarNet, SarNetVAE

    torch.manual_seed(0)
    return {"vae": SarNetVAE(latent_dim=4), "plain": SarNet(out_activation="sigmoid"), "conv": ConvVAE(latent_dim=4),
            "regression": SarNet(out_activation="none")}


@pytest.mark.parametrize("call, message", [a[1:] for a in API], ids=[str(i) for i in range(len(API))])
def test_a_request_the_api_cannot_serve_is_one_value_error(nets, call, message):
    with pytest.raises(ValueError, match=message) as e:
        call(nets, torch, sampling)
    assert "\n" not in str(e.value)


def test_a_0_1_long_keep_is_the_mask_it_spells(nets):
    dec = nets["vae"].decoder
    spelled = torch.zeros(49, dtype=torch.long)
    spelled[:10] = 1
    assert torch.equal(sampling.keep_mask(dec, spelled), sampling.keep_mask(dec, 10))


def test_the_edges_that_are_fine_still_are(nets):
    """th at the ends of its range, uniforms of the right shape, a regression config: accepted, and th=0 keeps
    every pixel (only pixels < th are zeroed)."""
    g = torch.Generator().manual_seed(0)
    assert sampling.generate(nets["vae"], n=2, th=0.0, generator=g).shape == (2, 1, 28, 28)
    assert sampling.generate(nets["vae"], n=2, th=0.999, generator=g).shape == (2, 1, 28, 28)
    u = torch.rand(2, 784, generator=g)
    x = torch.zeros(2, 1, 28, 28)
    fast = sampling.fill_fast(nets["plain"], x, mode="bernoulli", uniforms=u)
    assert torch.equal(fast, sampling.fill_naive(nets["plain"], x, mode="bernoulli", uniforms=u))
    images = sampling.sample_images(nets["regression"], 2, {"regression": {"alpha_max": 0.6, "p": 0.3,
                                                                          "refine": True}}, g)
    assert images.shape == (2, 1, 28, 28) and 0 <= images.min() and images.max() <= 1
