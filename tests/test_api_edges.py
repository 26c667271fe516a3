"""The library API at its edges: a request the sampler cannot serve (tests/bad_inputs.py API) and an argument a
constructor or function cannot take (REFUSED below) are one exception naming the argument, in one line, never a raw
IndexError, TypeError or silently wrong images. (train.py's refusals: tests/test_bad_inputs.py.)"""

import pytest
import torch

import sarnet.sampling as sampling
from sarnet.config import ConfigError, validate
from sarnet.data import DataError, MNISTDataModule
from sarnet.losses import CrossEntropyLoss, ReconstructionLoss
from sarnet.module import SarnetModule
from sarnet.nn import GeometryError, SarNet, SarNetVAE, SemiDense
from tests.bad_inputs import API
from tests.conftest import compose_config, make_net


@pytest.fixture(scope="module")
def nets():
    from sarnet.nn import ConvVAE

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


PIXELS = [[6, 1, 1], [6, 2, 1], [6, 1, 1]]
REFUSED = [  # (call, the exception, what its message must say)
    (lambda: SemiDense(28, 1, 3, 14, 2, 2), GeometryError, "patch_in=3 does not divide side_in=28"),
    (lambda: SemiDense(28, 1, 4, 14, 2, 1), GeometryError, "input has 49 patches"),
    (lambda: SemiDense(28, 1, 4, 14, 2, 5), GeometryError, "patch_out=5 does not divide side_out=14"),
    (lambda: SemiDense(28, 0, 4, 14, 2, 2), GeometryError, "channels_in=0 must be a positive int"),
    (lambda: SarNet(first_patch="first"), GeometryError, "first_patch='first' is not one of"),
    (lambda: SarNetVAE(0), GeometryError, "latent_dim=0 must be a positive int"),
    (lambda: SarNet([[28, 1, 4], [14, 2, 2]]), GeometryError, "same side and channels"),
    (lambda: SarNet(out_activation="tanh"), GeometryError, "out_activation='tanh'"),
    (lambda: SarNet(PIXELS, out_activation="softmax"), GeometryError, "softmax"),  # one channel in and out
    *[(lambda mode=mode: sampling.generate(make_net("cls-pixel-c2", "given"), 2, mode=mode), ValueError,
       "mode='categorical' is for softmax") for mode in ("mean", "bernoulli")],
    (lambda: sampling.generate(SarNet(PIXELS, out_activation="sigmoid"), 2, mode="categorical"), ValueError,
     "mode='categorical' is for softmax"),
    (lambda: sampling.generate(SarNetVAE(8), 4, dtype="float16"), ValueError,
     r"dtype='float16': must be one of \['float32', 'bfloat16'\]"),
    (lambda: SarnetModule(make_net("cls-c4", "given"), ReconstructionLoss("power"), None), ValueError, "loss=ce"),
    (lambda: SarnetModule(SarNet(out_activation="sigmoid"), CrossEntropyLoss(), None), ValueError, "loss=ce"),
    *[(lambda kw=kw: MNISTDataModule("/nonexistent", **kw), DataError, match) for kw, match in [
        ({"binarize": "yes"}, "binarize='yes'"), ({"val_size": 1.5}, "val_size=1.5"),
        ({"val_size": -1}, "val_size=-1"), ({"val_size": "10"}, "val_size='10'"),
        *[({"quantize": q}, "data.quantize") for q in (3, True, "2")],
        ({"quantize": 2, "binarize": "dynamic"}, "data.binarize=none")]],
    *[(lambda field=field: validate(compose_config(f"{field}=fp8")), ConfigError, rf"{field}='fp8' is invalid")
      for field in ("sample.dtype", "fid.dtype")],
]


@pytest.mark.parametrize("call, error, match", REFUSED, ids=[str(i) for i in range(len(REFUSED))])
def test_a_bad_argument_is_refused_in_one_line_naming_it(call, error, match):
    with pytest.raises(error, match=match) as e:
        call()
    assert "\n" not in str(e.value)
