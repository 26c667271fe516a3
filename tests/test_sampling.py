"""The fast sampler is exact: it gives the naive (reference) sampler's images for every geometry and mode."""

import hashlib

import pytest
import torch

from sarnet import sampling
from sarnet.nn import ConvVAE, SarNet, SarNetVAE
from sarnet.sampling import fill_fast, fill_naive, generate, generate_regression, keep_mask, patch_units
from tests.test_semidense import GEOMETRIES

IDS = ["-".join("x".join(map(str, t)) for t in g) for g in GEOMETRIES]


def random_net(geometry, latent, mode, seed=0):
    torch.manual_seed(seed)
    net = SarNet(geometry, latent_dim=latent, first_patch=mode, out_activation="sigmoid")
    for layer in net.layers:
        torch.nn.init.uniform_(layer.bias, -1, 1)  # default init otherwise: realistic activation scales
    return net


# The fast sampler sums final inputs into later rows once FLUSH_COLUMNS of them are pending: exact for any
# threshold, so the tests run it flushing after every patch (1) and never (a huge threshold) as well as by default.
FLUSH = pytest.mark.parametrize("flush", [1, sampling.FLUSH_COLUMNS, 10**9], ids=["flush1", "flush_default",
                                                                                   "no_flush"])
_NAIVE = {}


def naive_once(net, x, z=None, **kw):
    """fill_naive(net, x, z, **kw), computed once per distinct input: the naive sampler does not read FLUSH_COLUMNS,
    so the three FLUSH cases of a test compare their fast results with one naive result (a third of the time)."""
    h = hashlib.sha256(repr(sorted((k, v) for k, v in kw.items() if not torch.is_tensor(v))).encode())
    for t in [*net.state_dict().values(), x, z, *(v for v in kw.values() if torch.is_tensor(v))]:
        h.update(b"-" if t is None else repr((t.dtype, tuple(t.shape))).encode() + t.numpy().tobytes())
    key = h.hexdigest()
    if key not in _NAIVE:
        _NAIVE[key] = fill_naive(net, x, z, **kw)
    return _NAIVE[key]


@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
@pytest.mark.parametrize("mode", ["given", "predicted"])
@pytest.mark.parametrize("latent", [0, 5])
@FLUSH
def test_fast_equals_naive_before_threshold(geometry, mode, latent, flush, monkeypatch):
    monkeypatch.setattr(sampling, "FLUSH_COLUMNS", flush)
    net = random_net(geometry, latent, mode)
    z = torch.randn(6, latent) if latent else None
    x = torch.zeros(6, *net.image_shape)
    naive = naive_once(net, x, z, th=None)
    fast = fill_fast(net, x, z, th=None)
    assert (naive - fast).abs().max() <= 1e-5
    # Exactly equal in float64: the two differ only in float summation order.
    net64, z64 = net.double(), None if z is None else z.double()
    x64 = x.double()
    assert (naive_once(net64, x64, z64, th=None) - fill_fast(net64, x64, z64, th=None)).abs().max() < 1e-12


@pytest.mark.parametrize("geometry", GEOMETRIES[:3], ids=IDS[:3])
@pytest.mark.parametrize("mode", ["given", "predicted"])
@FLUSH
def test_fast_equals_naive_with_threshold_bernoulli_and_completion(geometry, mode, flush, monkeypatch):
    monkeypatch.setattr(sampling, "FLUSH_COLUMNS", flush)
    net = random_net(geometry, 4, mode, seed=1).double()
    z = torch.randn(5, 4, dtype=torch.float64)
    x = torch.rand(5, *net.image_shape, dtype=torch.float64)
    u = torch.rand(5, x[0].numel(), dtype=torch.float64)
    for kw in [dict(th=0.3), dict(mode="bernoulli", uniforms=u, temperature=0.7), dict(keep=2, th=0.1)]:
        assert (naive_once(net, x, z, **kw) - fill_fast(net, x, z, **kw)).abs().max() < 1e-10, kw


def test_fast_sampler_follows_weight_updates():
    """The sorted weights are cached on the net: every in-place update (optimizer steps, fused Adam's too,
    load_state_dict) and every move must be seen by the next call."""
    net = random_net(GEOMETRIES[2], 3, "predicted")
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
    other = random_net(GEOMETRIES[2], 3, "predicted", seed=7)
    net.load_state_dict(other.state_dict())
    assert fill_fast(net, x, z).equal(fill_fast(other, x, z))
    net64 = net.double()
    assert (fill_fast(net64, x.double(), z.double()) - fill_naive(net64, x.double(), z.double())).abs().max() < 1e-12


def test_reference_given_mode_leaves_patch_zero_black_and_keeps_given_patches():
    model = SarNetVAE(8)
    imgs = generate(model, 7, generator=torch.Generator().manual_seed(0))
    first = patch_units(model.decoder, 0)
    assert imgs.flatten(1)[:, first].abs().sum() == 0
    assert imgs.shape == (7, 1, 28, 28) and 0 <= imgs.min() and imgs.max() <= 1
    real = torch.rand(3, 1, 28, 28)
    done = generate(model, x=real, keep=10, generator=torch.Generator().manual_seed(0))
    kept = keep_mask(model.decoder, 10)
    units = torch.cat([patch_units(model.decoder, k) for k in kept.nonzero().squeeze(1).tolist()])
    assert torch.equal(done.flatten(1)[:, units], real.flatten(1)[:, units])


def test_generation_is_reproducible_and_restores_train_mode():
    model = SarNetVAE(16).train()
    a = generate(model, 4, generator=torch.Generator().manual_seed(3))
    b = generate(model, 4, method="naive", generator=torch.Generator().manual_seed(3))
    assert model.training and (a - b).abs().max() < 1e-5


@pytest.mark.parametrize("mode", ["mean", "bernoulli"])
def test_a_float64_net_generates_in_float64_with_the_float32_nets_draws(mode):
    geometry = [[4, 1, 2], [4, 2, 2], [4, 1, 2]]
    for make in (lambda: SarNetVAE(3, geometry, first_patch="predicted"), lambda: ConvVAE(3, side=4),
                 lambda: random_net(geometry, 0, "predicted")):
        torch.manual_seed(0)
        single = make().eval()
        double = make().double().eval()
        double.load_state_dict(single.state_dict())
        methods = ("fast", "naive") if single.ar_net is not None else ("fast",)
        runs = {(bits, method): generate(net, 6, method=method, mode=mode, generator=torch.Generator().manual_seed(1))
                for bits, net in ((32, single), (64, double)) for method in methods}
        assert runs[(64, "fast")].dtype == torch.float64
        if single.ar_net is not None:
            assert torch.allclose(runs[(64, "fast")], runs[(64, "naive")], atol=1e-12)
        # the same z and uniforms as the float32 net's: equal up to float32 rounding
        assert torch.allclose(runs[(64, "fast")].float(), runs[(32, "fast")], atol=1e-4)


def test_conv_vae_and_regression_generation():
    vae = ConvVAE(8)
    out = generate(vae, 5, th=None, generator=torch.Generator().manual_seed(0))
    assert out.shape == (5, 1, 28, 28)
    simple = SarNet()
    reference = {"alpha_max": 0.65, "p": 0.3, "th": 0.15, "refine": True}  # conf/model/sarnet.yaml's
    g1 = generate_regression(simple, 3, **reference, generator=torch.Generator().manual_seed(0))
    g2 = generate_regression(simple, 3, **reference, generator=torch.Generator().manual_seed(0))
    assert torch.equal(g1, g2) and g1.shape == (3, 1, 28, 28)
    assert g1.min() >= 0 and g1.max() <= 1  # clipped (< th -> 0, > 1 -> 1)


@pytest.mark.parametrize("geometry", [None, [[8, 1, 2], [4, 3, 1], [8, 2, 2], [8, 1, 2]], [[6, 1, 1], [6, 2, 1],
                                                                                          [6, 1, 1]]],
                         ids=["reference", "patch2", "pixel"])
@pytest.mark.parametrize("mode", ["given", "predicted"])
def test_regression_scheme_fast_equals_naive(geometry, mode):
    """The noisy regression scheme's fast path (prefix blocks of the sorted weights) draws the same images as the
    reference's loop of full passes, from the same random stream (float64: only summation order differs)."""
    torch.manual_seed(0)
    net = SarNet(geometry, first_patch=mode).double()
    for layer in net.layers:  # biases that put outputs on both sides of th, so the clip and the refine both act
        torch.nn.init.uniform_(layer.bias, -0.3, 0.6)
    kw = {"alpha_max": 0.65, "p": 0.3, "th": 0.15, "refine": True}
    for settings in (kw, {**kw, "refine": False, "th": None}):
        naive, fast = (generate_regression(net, 12, **settings, generator=torch.Generator().manual_seed(3),
                                           method=m) for m in ("naive", "fast"))
        assert naive.dtype == torch.float64 and 0.2 < (naive > 0).double().mean() < 0.8
        assert torch.allclose(naive, fast, rtol=0, atol=1e-12), (naive - fast).abs().max()
    with pytest.raises(ValueError, match="method="):
        generate_regression(net, 2, **kw, method="bogus")


def test_regression_scheme_refuses_a_latent_net():
    with pytest.raises(ValueError, match="no latent"):
        generate_regression(SarNet(latent_dim=4), 2, alpha_max=0.65, p=0.3, th=0.15, refine=False)
