"""The autoregressive property (by gradients), masks and parameter counts (geometry errors: test_bad_inputs.py)."""

import pytest
import torch

from sarnet.explain import gradient_importance
from sarnet.nn import ConvVAE, SarNet, SarNetVAE, SemiDense, patch_degrees, semidense_mask
from tests.conftest import MODES, NETS, assert_autoregressive, dependence, images, latents, make_net

# every NETS case, with no z, a z, and 4 z per image (the importance-sampling path) where it takes one
CASES = [(name, latent, draws) for name in NETS for latent in latents(name) for draws in ((1, 4) if latent else (1,))]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name, latent, draws", CASES, ids=[f"{n}-z{lat}x{d}" for n, lat, d in CASES])
def test_net_is_autoregressive(name, latent, draws, mode):
    """conftest.assert_autoregressive's rule on the outputs (weighted at random: a softmax pixel's probabilities sum
    to 1, whose gradient is 0) and on explain.gradient_importance (a SarNET-VAE's z from its encoder, fixed); several
    z per image: the image's part is computed once for all its draws, as if the image were repeated once per draw."""
    model = make_net(name, mode, latent)
    net = model.ar_net
    torch.manual_seed(0)
    for layer in net.layers:
        # Small weights and a large positive bias keep every ReLU active, so a missing dependence is a mask bug.
        layer.bias.data.fill_(3.0)
        layer.weight.data.normal_(0, layer.weight.shape[1] ** -0.5).mul_(layer.mask)
    x, n = images(net, 2), net.n_patches
    z = torch.randn(2 * draws, latent) if latent else None
    weights = torch.rand(1, *net.out_shape, generator=torch.Generator().manual_seed(0))
    dep = dependence(lambda v: net.activate(net.logits(v, z)) * weights, x, net.layers[-1].deg_out,
                     net.layers[0].deg_in, n)
    assert_autoregressive(dep, mode)
    if draws > 1:
        torch.testing.assert_close(net.logits(x, z), net.logits(x.repeat_interleave(draws, 0), z), rtol=1e-5, atol=1e-5)
        return
    for o in (1, n // 2, n - 1):
        s = gradient_importance(model, x[0], o)
        assert s.shape == (n,) and s.max() == 1 and (s[o:] == 0).all() and (s[:o] > 0).all(), o


@pytest.mark.parametrize("mask_type", ["a", "b"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("shape", [(6, 1, 1, 6, 2, 1), (8, 2, 2, 4, 3, 1), (28, 1, 4, 14, 2, 2), (28, 1, 7, 4, 2, 1)])
def test_layer_sees_exactly_its_mask_rule(mask_type, mode, shape):
    layer = SemiDense(*shape, latent_dim=2, mask_type=mask_type, first_patch=mode)
    torch.nn.init.normal_(layer.weight)
    layer.weight.data.mul_(layer.mask)
    z = torch.randn(1, 2)
    x = torch.rand(1, layer.in_image)
    dep = dependence(lambda v: layer(v, z), x, layer.deg_out, layer.deg_in, layer.n_patches)
    k = torch.arange(layer.n_patches)
    expected = k[None, :] < k[:, None] if mask_type == "a" else k[None, :] <= k[:, None]
    if mask_type == "a" and mode == "given":
        expected[0, 0] = True
    assert torch.equal(dep, expected)  # exactly the rule: no leak, no missing connection
    # latent columns are never masked; biases are not masked
    assert layer.mask[:, layer.in_image:].all()


def test_mask_function_is_the_reference_rule_on_a_small_case():
    # 4x4 image, 2x2 patches -> 4 patches; type a, "given", by hand (the rest: test_layer_sees_exactly_its_mask_rule)
    deg = patch_degrees(4, 1, 2)
    assert deg.view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    a = semidense_mask(deg, deg, latent_dim=1, mask_type="a", first_patch="given")
    first_rows = {int(deg[r]): a[r, :16].view(4, 4).int().tolist() for r in range(16)}
    assert first_rows[0] == first_rows[1] == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert first_rows[3] == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]


def test_parameter_counts_match_the_reference():
    def dense(m):
        return sum(p.numel() for p in m.parameters())

    vae, simple = SarNetVAE(128), SarNet()
    assert (dense(vae), vae.decoder.effective_parameters()) == (2_958_648, 1_445_432)
    assert (dense(simple), simple.effective_parameters()) == (2_154_040, 1_094_200)
    for latent, count in {128: 890_113, 64: 865_409, 32: 853_057, 16: 846_881, 8: 843_793}.items():
        assert dense(ConvVAE(latent)) == count
    assert dense(SarNetVAE(8)) == 1_713_236 + 422_416


@pytest.mark.parametrize("optimizer", ["adam", "adam_fused", "sgd"])
def test_masked_weights_stay_exactly_zero_after_training_steps(optimizer):
    torch.manual_seed(0)
    model = SarNetVAE(16)
    opts = {"adam": lambda p: torch.optim.Adam(p, lr=1e-2), "adam_fused": lambda p: torch.optim.Adam(p, fused=True),
            "sgd": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9)}
    opt = opts[optimizer](model.parameters())
    x = torch.rand(8, 1, 28, 28)
    for _ in range(3):
        out = model(x)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(out.logits, x) + out.mu.pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for layer in model.decoder.layers:
        assert torch.count_nonzero(layer.weight[~layer.mask.bool()]) == 0
        assert torch.count_nonzero(layer.weight[layer.mask.bool()]) > 0.99 * layer.mask.sum()


def test_mask_is_a_buffer_that_moves_and_is_saved_as_bool():
    layer = SemiDense(8, 1, 2, 8, 1, 2, latent_dim=2, mask_type="a")
    saved = layer.state_dict()["mask"]
    assert saved.dtype == torch.bool and torch.equal(saved, layer.mask.bool())  # small checkpoints
    assert layer.to(torch.float64).mask.dtype == torch.float64  # multiplied in the weights' own dtype
    other = SemiDense(8, 1, 2, 8, 1, 2, latent_dim=2, mask_type="a").double()
    other.load_state_dict(layer.state_dict())  # a bool mask loads into the float buffer
    assert other.mask.dtype == torch.float64 and torch.equal(other.mask, layer.mask)
