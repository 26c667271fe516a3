"""The classification SarNET (issue 16, docs/reference.md §3.1): pixels quantised to C classes, one-hot as C
channels, softmax outputs, per-pixel cross-entropy, categorical sampling (fast == naive), grey images out."""

import json
import subprocess
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from sarnet import sampling
from sarnet.config import validate
from sarnet.data import DataError, MNISTDataModule
from sarnet.data.datamodules import quantize
from sarnet.losses import CrossEntropyLoss, ssim
from sarnet.module import SarnetModule
from sarnet.nn import GeometryError, SarNet
from sarnet.sampling import fill_fast, generate, patch_units, sample_images, to_grayscale
from tests.conftest import compose_config, fake_idx, needs_data, run_script, train_inprocess
from tests.test_sampling import FLUSH, naive_once
from tests.test_semidense import dependence, randomize

# C = 2 and 4 classes, patch sides 1, 2 and 4; compressed and expanded hidden layers.
GEOMETRIES = [
    [[6, 2, 1], [6, 2, 1], [6, 2, 1]],                       # pixel-wise, C = 2
    [[4, 4, 1], [4, 3, 1], [4, 4, 1]],                       # pixel-wise, C = 4
    [[8, 2, 2], [4, 3, 1], [8, 2, 2], [8, 2, 2]],            # patch 2, C = 2
    [[8, 4, 2], [4, 3, 1], [8, 2, 2], [8, 4, 2]],            # patch 2, C = 4
    [[12, 2, 4], [6, 1, 2], [12, 2, 4]],                     # patch 4, C = 2
    [[28, 4, 4], [14, 2, 2], [28, 2, 4], [28, 4, 4]],        # patch 4, C = 4: model=sarnet_cls, data.quantize=4
]
IDS = ["-".join("x".join(map(str, t)) for t in g) for g in GEOMETRIES]
ROOT = Path(__file__).resolve().parents[1]


def cls_net(geometry, mode="given", seed=0):
    torch.manual_seed(seed)
    net = SarNet(geometry, first_patch=mode, out_activation="softmax")
    for layer in net.layers:
        torch.nn.init.uniform_(layer.bias, -1, 1)
    return net


def one_hot_images(n, classes, side, seed=0, dtype=torch.float32):
    level = torch.randint(0, classes, (n, 1, side, side), generator=torch.Generator().manual_seed(seed))
    return (level == torch.arange(classes).view(1, -1, 1, 1)).to(dtype)


# ---- sampling: exact fast == naive, a valid categorical draw ------------------------------------------------

@pytest.mark.parametrize("geometry", GEOMETRIES, ids=IDS)
@pytest.mark.parametrize("mode", ["given", "predicted"])
@FLUSH
def test_fast_equals_naive_categorical(geometry, mode, flush, monkeypatch):
    monkeypatch.setattr(sampling, "FLUSH_COLUMNS", flush)
    net = cls_net(geometry, mode).double()
    classes, side = net.image_shape[:2]
    for _, naive in categorical_draws(net, one_hot_images(4, classes, side, dtype=torch.float64)):
        assert torch.equal(naive.sum(1), torch.ones_like(naive[:, 0]))  # one-hot: exactly one class per pixel


def categorical_draws(net, x):
    """(settings, image) for three draw settings, the naive sampler's images, each checked equal to the fast one's
    bit for bit: 0/1 draws from the same uniforms."""
    u = torch.rand(4, x[0].numel(), dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    for kw in [dict(temperature=1.0), dict(temperature=0.3), dict(keep=2, temperature=0.7)]:
        naive = naive_once(net, x, mode="categorical", uniforms=u, **kw)
        assert torch.equal(naive, fill_fast(net, x, mode="categorical", uniforms=u, **kw)), kw
        yield kw, naive


def test_categorical_draw_follows_softmax_over_the_channels():
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [-1.0, 0.5], [0.3, -2.0]])  # (C=4, 2 pixels)
    n = 200_000
    u = torch.rand(n, 4, 2, generator=torch.Generator().manual_seed(0))
    for t in (1.0, 0.3):
        draw = sampling._categorical(logits.flatten().expand(n, -1), 4, t, u.flatten(1)).view(n, 4, 2)
        assert torch.equal(draw.sum(1), torch.ones(n, 2))
        assert (draw.mean(0) - torch.softmax(logits / t, dim=0)).abs().max() < 5e-3


def test_generate_and_sample_images_give_grey_levels():
    net = cls_net(GEOMETRIES[3])
    g = torch.Generator().manual_seed(0)
    one_hot = generate(net, 5, mode="categorical", temperature=0.3, generator=g)
    assert one_hot.shape == (5, 4, 8, 8) and torch.equal(one_hot.sum(1), torch.ones(5, 8, 8))
    black = patch_units(net, 0)[:4]  # channel 0 (class 0) of patch 0's 2x2 pixels: given, black
    assert one_hot.flatten(1)[:, black].eq(1).all()
    images = sample_images(net, 5, {"mode": "categorical", "temperature": 0.3}, torch.Generator().manual_seed(0))
    assert images.shape == (5, 1, 8, 8)
    assert torch.equal(images, to_grayscale(net, one_hot))  # class / (C - 1)
    levels = images.mul(3).round()
    assert torch.allclose(images, levels / 3) and set(levels.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    naive = sample_images(net, 5, {"mode": "categorical", "temperature": 0.3, "method": "naive"},
                          torch.Generator().manual_seed(0))
    assert torch.equal(naive, images)


def test_mode_and_output_must_fit():
    net = cls_net(GEOMETRIES[0])
    for mode in ("mean", "bernoulli"):
        with pytest.raises(ValueError, match="mode='categorical' is for softmax"):
            generate(net, 2, mode=mode)
    sigmoid = SarNet([[6, 1, 1], [6, 2, 1], [6, 1, 1]], out_activation="sigmoid")
    with pytest.raises(ValueError, match="mode='categorical' is for softmax"):
        generate(sigmoid, 2, mode="categorical")
    with pytest.raises(GeometryError, match="softmax"):
        SarNet([[6, 1, 1], [6, 2, 1], [6, 1, 1]], out_activation="softmax")


# ---- the net: autoregressive over patches for one-hot inputs ------------------------------------------------

@pytest.mark.parametrize("geometry", GEOMETRIES[:5], ids=IDS[:5])
@pytest.mark.parametrize("mode", ["given", "predicted"])
def test_one_hot_classification_net_is_autoregressive(geometry, mode):
    """All C channels of a patch share its degree: the class probabilities (softmax over C) of output patch k
    depend on the one-hot channels of input patches < k only."""
    net = SarNet(geometry, first_patch=mode, out_activation="softmax")
    randomize(net)
    classes, side = net.image_shape[:2]
    assert_probabilities_autoregressive(net, one_hot_images(2, classes, side))


def assert_probabilities_autoregressive(net, x):
    """Output patch k's class probabilities read input patches < k only (and patch 0 itself in "given" mode)."""
    # the probabilities, randomly weighted: a pixel's C of them sum to 1, whose gradient is 0 whatever they read
    weights = torch.rand(1, *net.out_shape, generator=torch.Generator().manual_seed(0))
    dep = dependence(lambda v: net.activate(net.logits(v)) * weights, x, net.layers[-1].deg_out,
                     net.layers[0].deg_in, net.n_patches)
    strict = torch.ones(net.n_patches, net.n_patches).tril(-1).bool()
    if net.first_patch == "given":
        strict[0, 0] = True
    assert not (dep & ~strict).any(), f"leak:\n{(dep & ~strict).nonzero()}"
    assert all(dep[k, k - 1] for k in range(1, net.n_patches))


# ---- loss and data ------------------------------------------------------------------------------------------

def test_cross_entropy_is_torchs_per_image_and_takes_soft_targets():
    logits = torch.randn(3, 4, 28, 28)
    target = one_hot_images(3, 4, 28, seed=2)
    loss = CrossEntropyLoss()(logits, torch.softmax(logits, 1), target)
    expected = F.cross_entropy(logits, target.argmax(1), reduction="none").flatten(1).mean(1)
    assert loss.shape == (3,) and torch.allclose(loss, expected, atol=1e-6)
    summed = CrossEntropyLoss(reduction="sum")(logits, None, target)
    assert torch.allclose(summed, expected * 784, rtol=1e-5)
    soft = torch.softmax(torch.randn(3, 4, 28, 28), 1)
    assert torch.allclose(CrossEntropyLoss()(logits, None, soft),
                          F.cross_entropy(logits, soft, reduction="none").flatten(1).mean(1), atol=1e-6)
    with_ssim = CrossEntropyLoss(ssim_weight=1.0)(logits, torch.softmax(logits, 1), target)
    assert (with_ssim > loss).all()
    with pytest.raises(ValueError, match="data.quantize"):
        CrossEntropyLoss()(logits, None, target[:, :1])


def test_quantize_is_floor_of_uint8_over_256_by_c():
    u8 = torch.tensor([0, 63, 64, 127, 128, 191, 192, 255])
    x = (u8.float() / 255).view(1, 1, 1, -1)
    for classes, expected in ((2, [0, 0, 0, 0, 1, 1, 1, 1]), (4, [0, 0, 1, 1, 2, 2, 3, 3])):
        q = quantize(x, classes)
        assert q.shape == (1, classes, 1, 8) and q.dtype == torch.float32
        assert q.argmax(1).flatten().tolist() == expected and torch.equal(q.sum(1), torch.ones(1, 1, 8))


def test_datamodule_serves_one_hot_batches(tmp_path):
    root = fake_idx(tmp_path)
    dm = MNISTDataModule(root=root, quantize=4, val_size=0)
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 4, 28, 28) and torch.equal(x.sum(1), torch.ones(64, 28, 28))
    assert dm.val_x is dm.test_x and dm.val_x.shape[1] == 4
    for bad in (3, True, "2"):
        with pytest.raises(DataError, match="data.quantize"):
            MNISTDataModule(root=root, quantize=bad)
    with pytest.raises(DataError, match="data.binarize=none"):
        MNISTDataModule(root=root, quantize=2, binarize="dynamic")


def test_module_trains_a_step_and_refuses_a_mismatched_loss():
    net = cls_net([[28, 2, 4], [14, 2, 2], [28, 2, 4], [28, 2, 4]])
    module = SarnetModule(net, CrossEntropyLoss(), lambda params: torch.optim.SGD(params, lr=1e-3),
                          beta=0.0, batch_reduction="mean")
    loss = module._step((one_hot_images(4, 2, 28), None), "val")
    assert torch.isfinite(loss)
    from sarnet.losses import ReconstructionLoss
    with pytest.raises(ValueError, match="loss=ce"):
        SarnetModule(net, ReconstructionLoss("power"), None)
    with pytest.raises(ValueError, match="loss=ce"):
        SarnetModule(SarNet(out_activation="sigmoid"), CrossEntropyLoss(), None)


# ---- configs ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("overrides", [(), ("data.quantize=4",), ("model=sarnet_cls_p2",),
                                       ("data.quantize=4", "model=sarnet_cls_p2")])
def test_configs_build_for_both_patch_sides_and_class_counts(overrides):
    cfg = compose_config("experiment=cls_sarnet", *overrides)
    net = validate(cfg)
    classes = cfg.data.quantize
    assert net.image_shape == (classes, 28, 28) and net.out_activation == "softmax" and net.latent_dim == 0
    assert net.patch == (2 if "model=sarnet_cls_p2" in overrides else 4)
    opt = cfg.model.optimizer
    assert (opt._target_, opt.lr, opt.momentum, cfg.trainer.max_epochs) == ("torch.optim.SGD", 0.001, 0.95, 500)
    assert cfg.sample.mode == "categorical" and cfg.loss._target_ == "sarnet.losses.CrossEntropyLoss"


# ---- the real train.py --------------------------------------------------------------------------------------

@needs_data
def test_smoke_run_classification(tmp_path):
    status, out = train_inprocess("experiment=cls_sarnet", "data.quantize=4", "trainer=smoke", "fid=off", "logger=csv",
                                  f"hydra.run.dir={tmp_path}")
    assert status == 0, out[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["model"] == "sarnet_cls" and results["epochs"] == 1
    for key in ["val/loss", "test/loss", "train/loss"]:
        assert key in results["metrics"]
    assert list((tmp_path / "images").glob("samples_epoch*.png"))
    assert list((tmp_path / "images").glob("reconstructions_epoch*.png"))
    # the scripts read the checkpoint, draw categorically (the run's sample.mode) and write grey grids
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    for script in ("sample.py", "complete.py"):
        out = tmp_path / f"{script}.png"
        status, _, stderr = run_script(script, "--ckpt", ckpt, "--n", "4", "--out", out, "--device", "cpu")
        assert status == 0 and out.exists(), stderr[-2000:]


# ---- the "probability" variant: grey image in, 2 classes per pixel out ---------------------------------------

PROB_GEOMETRIES = [
    [[6, 1, 1], [6, 2, 1], [6, 2, 1]],                       # pixel-wise
    [[8, 1, 2], [4, 3, 1], [8, 2, 2], [8, 2, 2]],            # patch 2, compressed hidden layer
    [[12, 1, 4], [12, 1, 4], [12, 2, 4], [12, 2, 4]],        # patch 4, side kept (model=sarnet_prob's shape)
]
PROB_IDS = ["-".join("x".join(map(str, t)) for t in g) for g in PROB_GEOMETRIES]


@pytest.mark.parametrize("geometry", PROB_GEOMETRIES, ids=PROB_IDS)
@pytest.mark.parametrize("mode", ["given", "predicted"])
@FLUSH
def test_probability_net_fast_equals_naive_and_writes_black_or_white(geometry, mode, flush, monkeypatch):
    monkeypatch.setattr(sampling, "FLUSH_COLUMNS", flush)
    net = cls_net(geometry, mode).double()
    assert net.image_shape[0] == 1 and net.out_shape[0] == 2
    side = net.image_shape[1]
    x = torch.rand(4, 1, side, side, dtype=torch.float64, generator=torch.Generator().manual_seed(2))
    for kw, naive in categorical_draws(net, x):
        known = sampling.keep_mask(net, kw.get("keep", 0))
        drawn = ~known[net.layers[0].deg_in]
        assert set(naive.flatten(1)[:, drawn].unique().tolist()) <= {0.0, 1.0}  # every drawn pixel black or white
        assert torch.equal(naive.flatten(1)[:, ~drawn], x.flatten(1)[:, ~drawn])  # given pixels kept as they were


def test_probability_net_draws_white_with_the_class_1_probability():
    """With one uniform per pixel, white is drawn exactly where u >= p(black), i.e. with probability p(white)."""
    net = cls_net([[6, 1, 1], [6, 2, 1], [6, 2, 1]], "predicted")
    x = torch.zeros(1, 1, 6, 6)
    u = torch.rand(1, 36, generator=torch.Generator().manual_seed(3))
    white = fill_fast(net, x, mode="categorical", uniforms=u).flatten()
    # patch 0 reads nothing: its probabilities come from the biases alone, whatever was drawn later
    p_black = torch.softmax(net.logits(torch.zeros(1, 1, 6, 6)), 1)[0, 0].flatten()[0]
    assert white[0] == float(u[0, 0] >= p_black)
    images = sample_images(net, 3, {"mode": "categorical", "temperature": 0.3}, torch.Generator().manual_seed(0))
    assert images.shape == (3, 1, 6, 6) and set(images.unique().tolist()) <= {0.0, 1.0}


@pytest.mark.parametrize("geometry", PROB_GEOMETRIES, ids=PROB_IDS)
@pytest.mark.parametrize("mode", ["given", "predicted"])
def test_probability_net_is_autoregressive(geometry, mode):
    """The class probabilities of output patch k depend on the grey pixels of input patches < k only."""
    net = SarNet(geometry, first_patch=mode, out_activation="softmax")
    randomize(net)
    assert_probabilities_autoregressive(net, torch.rand(2, *net.image_shape,
                                                        generator=torch.Generator().manual_seed(0)))


def test_grey_target_is_the_soft_target_one_minus_x_x():
    logits = torch.randn(3, 2, 28, 28)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, 1)
    expected = F.cross_entropy(logits, torch.cat([1 - x, x], 1), reduction="none").flatten(1).mean(1)
    assert torch.allclose(CrossEntropyLoss()(logits, probs, x), expected, atol=1e-6)
    with_ssim = expected + 1 - ssim(probs[:, 1:2], x)  # SSIM of the class-1 (white) probability against x
    assert torch.allclose(CrossEntropyLoss(ssim_weight=1.0)(logits, probs, x), with_ssim, atol=1e-6)
    net = SarNet([[28, 1, 4], [28, 2, 4]], out_activation="softmax")
    assert torch.equal(to_grayscale(net, probs), probs[:, 1:2])  # the grey level logged as val/mse's output


def test_probability_config_builds_and_trains_a_step():
    cfg = compose_config("experiment=cls_sarnet_prob")
    net = validate(cfg)
    assert (net.image_shape, net.out_shape, net.patch) == ((1, 28, 28), (2, 28, 28), 4)
    assert [layer.side_out for layer in net.layers] == [28, 28, 28]  # no compression, as the reference's
    assert cfg.loss.ssim_weight == 1.0 and cfg.data.quantize is None and cfg.sample.mode == "categorical"
    module = SarnetModule(net, CrossEntropyLoss(ssim_weight=1.0), lambda params: torch.optim.SGD(params, lr=1e-3),
                          beta=0.0, batch_reduction="mean")
    x = torch.rand(4, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(module._step((x, None), "val"))


@needs_data
def test_smoke_run_probability_variant(tmp_path):
    status, out = train_inprocess("experiment=cls_sarnet_prob", "trainer=smoke", "fid=off", "logger=csv",
                                  f"hydra.run.dir={tmp_path}")
    assert status == 0, out[-3000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["model"] == "sarnet_prob" and results["epochs"] == 1
    # what its images depend on: the draw (a cell of scripts/fid_table.py), and the code that ran
    assert results["sampling"] == {"method": "fast", "th": None, "z_scale": 1.0, "dtype": "float32",
                                   "mode": "categorical", "temperature": 0.3}
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's fresh clone is one)
        assert results["code"]["commit"] == head.stdout.strip() and isinstance(results["code"]["dirty"], bool)
    assert list((tmp_path / "images").glob("samples_epoch*.png"))
    ckpt = str(tmp_path / "checkpoints" / "last.ckpt")
    for script in ("sample.py", "complete.py"):
        out = tmp_path / f"{script}.png"
        status, _, stderr = run_script(script, "--ckpt", ckpt, "--n", "4", "--out", out, "--device", "cpu")
        assert status == 0 and out.exists(), stderr[-2000:]
