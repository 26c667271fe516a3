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
