"""The autoregressive property (by gradients), masks, parameter counts and geometry errors."""

import pytest
import torch

from sarnet.nn import ConvVAE, GeometryError, SarNet, SarNetVAE, SemiDense, patch_degrees, semidense_mask

# (geometry, description): pixel-wise (patch 1) and patch-wise (2, 4, 7), several channel counts.
GEOMETRIES = [
    [[6, 1, 1], [6, 2, 1], [6, 1, 1]],                       # pixel-wise
    [[4, 3, 1], [4, 2, 1], [4, 3, 1]],                       # pixel-wise, 3 channels
    [[8, 1, 2], [4, 3, 1], [8, 2, 2], [8, 1, 2]],            # patch 2 with a compressed hidden layer
    [[28, 1, 4], [14, 2, 2], [28, 2, 4], [28, 1, 4]],        # the reference, patch 4
    [[28, 1, 7], [4, 2, 1], [28, 1, 7]],                     # patch 7 (16 patches)
    [[12, 2, 4], [6, 1, 2], [12, 2, 4]],                     # 2 image channels
]
MODES = ["given", "predicted"]


def dependence(f, x, out_deg, in_deg, n_patches):
    """dep[k, j] = True when some output unit of patch k has a non-zero gradient wrt some input of patch j."""
    dep = torch.zeros(n_patches, n_patches, dtype=torch.bool)
    for k in range(n_patches):
        x_ = x.clone().requires_grad_(True)
        y = f(x_).flatten(1)
        (grad,) = torch.autograd.grad(y[:, out_deg == k].sum(), x_)
        touched = grad.flatten(1).abs().sum(0) > 0
        dep[k] = torch.zeros(n_patches, dtype=torch.bool).index_put_((in_deg[touched],), torch.tensor(True))
    return dep


def randomize(net):
    torch.manual_seed(0)
    for layer in net.layers:
        # Small weights and a large positive bias keep every ReLU active, so a missing dependence is a mask bug.
        layer.bias.data.fill_(3.0)
        layer.weight.data.normal_(0, layer.weight.shape[1] ** -0.5).mul_(layer.mask)


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "-".join("x".join(map(str, t)) for t in g))
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("latent, draws", [(0, 1), (3, 1), (3, 4)], ids=["no-z", "z", "4-z-per-image"])
def test_stack_is_autoregressive(geometry, mode, latent, draws):
    net = SarNet(geometry, latent_dim=latent, first_patch=mode, out_activation="sigmoid")
    randomize(net)
    z = torch.randn(2 * draws, latent) if latent else None  # draws > 1: the importance-sampling path
    x = torch.rand(2, *net.image_shape)
    deg = net.layers[0].deg_in
    dep = dependence(lambda v: net.logits(v, z), x, deg, deg, net.n_patches)
    strict = torch.ones(net.n_patches, net.n_patches).tril(-1).bool()  # output k sees inputs j < k only
    if mode == "given":
        # The reference: output patch 0 is a copy path from input patch 0 (docs/reference.md §2.1); k >= 1 stays strict.
        strict[0, 0] = True
    assert not (dep & ~strict).any(), f"leak: output patches see inputs >= themselves:\n{(dep & ~strict).nonzero()}"
    # and the stack does use its context: every output patch k >= 1 depends on input patch k - 1
    assert all(dep[k, k - 1] for k in range(1, net.n_patches))
    if mode == "predicted":
        assert not dep[0].any()  # strictly autoregressive: patch 0 is predicted from z and biases alone


@pytest.mark.parametrize("geometry", GEOMETRIES[:3], ids=lambda g: "-".join("x".join(map(str, t)) for t in g))
def test_several_latents_per_image_equal_the_image_repeated(geometry):
    # SemiDense's importance-sampling path computes an image's part once for all its z draws: the same logits as
    # repeating the image once per draw
    net = SarNet(geometry, latent_dim=3, first_patch="predicted", out_activation="sigmoid")
    randomize(net)
    x, z = torch.rand(2, *net.image_shape), torch.randn(8, 3)
    torch.testing.assert_close(net.logits(x, z), net.logits(x.repeat_interleave(4, 0), z), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="z has 7 rows for 2 inputs: must be a multiple"):
        net.logits(x, z[:7])


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
    # 4x4 image, 2x2 patches -> 4 patches; spelled out by hand for type a ("given") and type b.
    deg = patch_degrees(4, 1, 2)
    assert deg.view(4, 4).tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]]
    a = semidense_mask(deg, deg, latent_dim=1, mask_type="a", first_patch="given")
    first_rows = {int(deg[r]): a[r, :16].view(4, 4).int().tolist() for r in range(16)}
    assert first_rows[0] == first_rows[1] == [[1, 1, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]]
    assert first_rows[3] == [[1, 1, 1, 1], [1, 1, 1, 1], [1, 1, 0, 0], [1, 1, 0, 0]]
    assert a[:, 16].all()
    strict = semidense_mask(deg, deg, mask_type="a", first_patch="predicted")
    assert not strict[deg == 0].any()


def test_parameter_counts_match_the_reference():
    def dense(m):
        return sum(p.numel() for p in m.parameters())

    assert dense(SarNetVAE(128)) == 2_958_648
    simple = SarNet()
    assert (dense(simple), simple.effective_parameters()) == (2_154_040, 1_094_200)
    assert SarNetVAE(128).decoder.effective_parameters() == 1_445_432
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


@pytest.mark.parametrize("args, message", [
    ((28, 1, 3, 14, 2, 2), "patch_in=3 does not divide side_in=28"),
    ((28, 1, 4, 14, 2, 1), "input has 49 patches"),
    ((28, 1, 4, 14, 2, 5), "patch_out=5 does not divide side_out=14"),
    ((28, 0, 4, 14, 2, 2), "channels_in=0 must be a positive int"),
])
def test_bad_geometry_fails_at_construction_with_a_clear_message(args, message):
    with pytest.raises(GeometryError, match=message):
        SemiDense(*args)


def test_bad_model_configs():
    with pytest.raises(GeometryError, match="first_patch='first' is not one of"):
        SarNet(first_patch="first")
    with pytest.raises(GeometryError, match="latent_dim=0 must be a positive int"):
        SarNetVAE(0)
    with pytest.raises(GeometryError, match="same side and channels"):
        SarNet([[28, 1, 4], [14, 2, 2]])
    with pytest.raises(GeometryError, match="out_activation='tanh'"):
        SarNet(out_activation="tanh")


def test_mask_is_a_buffer_that_moves_and_is_saved_as_bool():
    layer = SemiDense(8, 1, 2, 8, 1, 2, latent_dim=2, mask_type="a")
    saved = layer.state_dict()["mask"]
    assert saved.dtype == torch.bool and torch.equal(saved, layer.mask.bool())  # small checkpoints
    assert layer.to(torch.float64).mask.dtype == torch.float64  # multiplied in the weights' own dtype
    other = SemiDense(8, 1, 2, 8, 1, 2, latent_dim=2, mask_type="a").double()
    other.load_state_dict(layer.state_dict())  # a bool mask loads into the float buffer
    assert other.mask.dtype == torch.float64 and torch.equal(other.mask, layer.mask)
