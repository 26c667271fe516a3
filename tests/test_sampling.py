"""The naive sampler (one full forward pass per generated patch, the reference's) is the specification: the fast
sampler gives its images for every kind of net, layer mode and draw."""

import pytest
import torch

from sarnet import sampling
from sarnet.nn import ConvVAE, SarNet, SarNetVAE
from sarnet.sampling import fill_fast, fill_naive, generate, generate_regression, keep_mask, patch_units
from tests.conftest import MODES, NETS, compose_config, images, latents, make_net

# The draws each kind of net makes (sample.mode), from scratch and completing 2 given patches (keep).
DRAWS = {
    "sigmoid": [dict(th=None), dict(th=0.3), dict(keep=2, th=0.1), dict(mode="bernoulli", temperature=0.7),
                dict(mode="bernoulli", keep=2, temperature=2.0)],
    "none": [dict(th=None), dict(keep=2, th=0.15)],
    "softmax": [dict(mode="categorical"), dict(mode="categorical", temperature=0.3),
                dict(mode="categorical", keep=2, temperature=0.7)],
}
REGRESSION = {"alpha_max": 0.65, "p": 0.3, "th": 0.15, "refine": True}  # conf/recipe/sarnet.yaml's


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", NETS)
def test_fast_equals_naive(name, mode, monkeypatch):
    """The same z and uniforms give the same images, up to float summation order: 1e-5 in float32, 1e-12 in
    float64 (a draw: the same 0/1 pixels). The fast sampler sums final inputs into later rows once FLUSH_COLUMNS of
    them are pending: exact for any threshold, so it runs flushing after every patch, by default and never."""
    activation = NETS[name][1]
    for latent in latents(name):
        net = make_net(name, mode, latent).ar_net
        for layer in net.layers:
            torch.nn.init.uniform_(layer.bias, -1, 1)  # default init otherwise: realistic activation scales
        cases = [(torch.float64, 1e-12, DRAWS[activation])]
        if activation != "softmax":
            cases.insert(0, (torch.float32, 1e-5, [dict(th=None)]))
        for dtype, tol, draws in cases:
            net = net.to(dtype)
            x = images(net, 5, dtype=dtype)  # the given patches; the rest must not be read before it is drawn
            z = torch.randn(5, latent, dtype=dtype) if latent else None
            u = torch.rand(5, x[0].numel(), dtype=dtype, generator=torch.Generator().manual_seed(1))
            for kw in draws:
                kw = {**kw, "uniforms": u} if "mode" in kw else kw
                naive = fill_naive(net, x, z, **kw)
                for flush in (1, sampling.FLUSH_COLUMNS, 10**9):
                    monkeypatch.setattr(sampling, "FLUSH_COLUMNS", flush)
                    assert (fill_fast(net, x, z, **kw) - naive).abs().max() <= tol, (dtype, kw, flush)
                assert_valid_draw(net, x, naive, kw)
    if activation == "none":  # the regression scheme's own fast path: prefix blocks of the sorted weights
        for layer in net.layers:  # outputs on both sides of th, so that the clip and the refine both act
            torch.nn.init.uniform_(layer.bias, -0.3, 0.6)
        for settings in (REGRESSION, {**REGRESSION, "refine": False, "th": None}):
            naive, fast = (generate_regression(net, 12, **settings, generator=torch.Generator().manual_seed(3),
                                               method=m) for m in ("naive", "fast"))
            assert naive.dtype == torch.float64 and 0.2 < (naive > 0).double().mean() < 0.8
            assert (naive - fast).abs().max() <= 1e-12


def assert_valid_draw(net, x, images, kw):
    """Given patches are kept bit for bit; a Bernoulli draw writes 0 or 1, a categorical draw one class per pixel:
    one-hot, or black or white for a probability net (its grey input)."""
    given = keep_mask(net, kw.get("keep", 0))[net.layers[0].deg_in]
    flat = images.flatten(1)
    assert torch.equal(flat[:, given], x.flatten(1)[:, given])
    if net.one_hot_input:
        assert torch.equal(images.sum(1), torch.ones_like(images[:, 0]))
    elif kw.get("mode") in ("bernoulli", "categorical"):
        assert set(flat[:, ~given].unique().tolist()) <= {0.0, 1.0}


def test_fast_sampler_follows_weight_updates():
    """The sorted weights are cached on the net: every in-place update (optimizer steps, fused Adam's too,
    load_state_dict) and every move must be seen by the next call."""
    net = make_net("patch2", "predicted", 3).ar_net
    z, x = torch.randn(4, 3), torch.zeros(4, *net.image_shape)
    before = fill_fast(net, x, z)
    assert fill_fast(net, x, z).equal(before)  # cached, same images
    with torch.no_grad():
        net.layers[1].weight.mul_(-2)
    assert not fill_fast(net, x, z).equal(before)
    assert (fill_fast(net, x, z) - fill_naive(net, x, z)).abs().max() <= 1e-5
    before = fill_fast(net, x, z)
    for p in net.parameters():
        p.grad = torch.randn_like(p)
    torch.optim.Adam(net.parameters(), lr=0.1, fused=True).step()  # in place, without bumping _version
    assert not fill_fast(net, x, z).equal(before)
    assert (fill_fast(net, x, z) - fill_naive(net, x, z)).abs().max() <= 1e-5
    other = make_net("patch2", "predicted", 3, seed=7).ar_net
    net.load_state_dict(other.state_dict())
    assert fill_fast(net, x, z).equal(fill_fast(other, x, z))
    net64 = net.double()
    assert (fill_fast(net64, x.double(), z.double()) - fill_naive(net64, x.double(), z.double())).abs().max() < 1e-12


def test_the_default_models_generate_28x28_images():
    """SarNET-VAE: the reference's given mode leaves patch 0 black, train mode restored after (given patches kept:
    assert_valid_draw); conv VAE; regression SarNET: seeded, clipped (its refusals: tests/bad_inputs.py API)."""
    model = SarNetVAE(8).train()
    imgs = generate(model, 7, generator=torch.Generator().manual_seed(0))
    assert imgs.flatten(1)[:, patch_units(model.decoder, 0)].abs().sum() == 0 and model.training
    assert imgs.shape == (7, 1, 28, 28) and 0 <= imgs.min() and imgs.max() <= 1
    assert generate(ConvVAE(8), 5, th=None, generator=torch.Generator().manual_seed(0)).shape == (5, 1, 28, 28)
    g1, g2 = (generate_regression(SarNet(), 3, **REGRESSION, generator=torch.Generator().manual_seed(0))
              for _ in range(2))
    assert torch.equal(g1, g2) and g1.shape == (3, 1, 28, 28)
    assert g1.min() >= 0 and g1.max() <= 1  # clipped: < th -> 0, > 1 -> 1


@pytest.mark.parametrize("mode", ["mean", "bernoulli"])
def test_float32_is_the_default_exact_path_and_a_float64_net_generates_in_float64_with_float32_draws(mode):
    geometry = [[4, 1, 2], [4, 2, 2], [4, 1, 2]]
    for make in (lambda: SarNetVAE(3, geometry, first_patch="predicted"), lambda: ConvVAE(3, side=4),
                 lambda: SarNet(geometry, first_patch="predicted", out_activation="sigmoid")):
        torch.manual_seed(0)
        single = make().eval()
        double = make().double().eval()
        double.load_state_dict(single.state_dict())
        methods = ("fast", "naive") if single.ar_net is not None else ("fast",)
        runs = {(bits, method): generate(net, 6, method=method, mode=mode, generator=torch.Generator().manual_seed(1),
                                         dtype="float32")  # float32: the weights' own dtype, the exact path
                for bits, net in ((32, single), (64, double)) for method in methods}
        assert runs[(64, "fast")].dtype == torch.float64
        default = generate(single, 6, mode=mode, generator=torch.Generator().manual_seed(1))
        assert torch.equal(runs[(32, "fast")], default)
        if single.ar_net is not None:
            assert torch.allclose(runs[(64, "fast")], runs[(64, "naive")], atol=1e-12)
        # the same z and uniforms as the float32 net's: equal up to float32 rounding
        assert torch.allclose(runs[(64, "fast")].float(), runs[(32, "fast")], atol=1e-4)


def test_the_config_states_the_sampling_defaults_the_api_uses_and_results_record_the_draw():
    """conf/config.yaml's sample node is SampleSettings' defaults (th and regression: the model's recipe); a run's
    results record the draw it used, the regression scheme too."""
    from sarnet.config import validate
    from sarnet.settings import SampleSettings

    node = {k: v for k, v in compose_config().sample.items() if k not in ("th", "regression")}
    assert node == {k: getattr(SampleSettings(), k) for k in node} and set(node) >= {"method", "mode", "dtype"}
    for overrides, extra in [((), {}),
                             (("model=sarnet",), {"regression": {"alpha_max": 0.65, "p": 0.3, "refine": True}}),
                             (("experiment=cls_sarnet",), {"mode": "categorical", "temperature": 0.3})]:
        cfg = compose_config(*overrides)
        record = SampleSettings.of(cfg.sample).record(validate(cfg).out_activation)
        assert record == {"method": "fast", "th": cfg.sample.th, "z_scale": 1.0, "dtype": "float32", **extra}, overrides
