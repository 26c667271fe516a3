"""The classification SarNET (docs/reference.md §3.1): pixels quantised to C classes, one-hot as C channels, softmax
outputs, per-pixel cross-entropy, categorical sampling, grey images out (fast == naive etc.: the shared tests)."""

import torch
import torch.nn.functional as F

from sarnet import sampling
from sarnet.data import MNISTDataModule
from sarnet.data.datamodules import quantize
from sarnet.losses import CrossEntropyLoss, ssim
from sarnet.nn import SarNet, to_grayscale
from sarnet.sampling import fill_fast, generate, patch_units, sample_images
from tests.conftest import fake_idx, images, make_net

# ---- sampling: a valid categorical draw (fast == naive: tests/test_sampling.py) ----------------------------------

def test_categorical_draw_follows_softmax_over_the_channels():
    logits = torch.tensor([[0.0, 1.0], [2.0, 0.0], [-1.0, 0.5], [0.3, -2.0]])  # (C=4, 2 pixels)
    n = 200_000
    u = torch.rand(n, 4, 2, generator=torch.Generator().manual_seed(0))
    for t in (1.0, 0.3):
        draw = sampling._categorical(logits.flatten().expand(n, -1), 4, t, u.flatten(1)).view(n, 4, 2)
        assert torch.equal(draw.sum(1), torch.ones(n, 2))
        assert (draw.mean(0) - torch.softmax(logits / t, dim=0)).abs().max() < 5e-3


def test_generate_and_sample_images_give_grey_levels():
    net = make_net("cls-patch2-c4", "given")
    g = torch.Generator().manual_seed(0)
    one_hot = generate(net, 5, mode="categorical", temperature=0.3, generator=g)
    assert one_hot.shape == (5, 4, 8, 8) and torch.equal(one_hot.sum(1), torch.ones(5, 8, 8))
    black = patch_units(net, 0)[:4]  # channel 0 (class 0) of patch 0's 2x2 pixels: given, black
    assert one_hot.flatten(1)[:, black].eq(1).all()
    grey, naive = (sample_images(net, 5, {"mode": "categorical", "temperature": 0.3, "method": method},
                                 torch.Generator().manual_seed(0)) for method in ("fast", "naive"))
    assert grey.shape == (5, 1, 8, 8)
    assert torch.equal(grey, to_grayscale(net, one_hot))  # class / (C - 1)
    levels = grey.mul(3).round()
    assert torch.allclose(grey, levels / 3) and set(levels.unique().tolist()) <= {0.0, 1.0, 2.0, 3.0}
    assert torch.equal(naive, grey)  # fast == naive through sample_images, in float32 (test_sampling: float64)


# ---- loss and data ------------------------------------------------------------------------------------------

def test_cross_entropy_is_torchs_per_image_and_takes_soft_and_grey_targets():
    logits = torch.randn(3, 4, 28, 28)
    target = images(make_net("cls-c4", "given"), 3, seed=2)
    loss = CrossEntropyLoss()(logits, torch.softmax(logits, 1), target)
    expected = F.cross_entropy(logits, target.argmax(1), reduction="none").flatten(1).mean(1)
    assert loss.shape == (3,) and torch.allclose(loss, expected, atol=1e-6)
    assert torch.allclose(CrossEntropyLoss(reduction="sum")(logits, None, target), expected * 784, rtol=1e-5)
    soft = torch.softmax(torch.randn(3, 4, 28, 28), 1)
    assert torch.allclose(CrossEntropyLoss()(logits, None, soft),
                          F.cross_entropy(logits, soft, reduction="none").flatten(1).mean(1), atol=1e-6)
    with_ssim = CrossEntropyLoss(ssim_weight=1.0)(logits, torch.softmax(logits, 1), target)
    assert (with_ssim > loss).all()
    # a probability net's grey target x: the soft target (1 - x, x), SSIM on the class-1 (white) probability
    logits = torch.randn(3, 2, 28, 28)
    x = torch.rand(3, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    probs = torch.softmax(logits, 1)
    expected = F.cross_entropy(logits, torch.cat([1 - x, x], 1), reduction="none").flatten(1).mean(1)
    assert torch.allclose(CrossEntropyLoss()(logits, probs, x), expected, atol=1e-6)
    with_ssim = expected + 1 - ssim(probs[:, 1:2], x)
    assert torch.allclose(CrossEntropyLoss(ssim_weight=1.0)(logits, probs, x), with_ssim, atol=1e-6)
    net = SarNet([[28, 1, 4], [28, 2, 4]], out_activation="softmax")
    assert torch.equal(to_grayscale(net, probs), probs[:, 1:2])  # the grey level logged as val/mse's output


def test_quantize_is_floor_of_uint8_over_256_by_c(tmp_path):
    u8 = torch.tensor([0, 63, 64, 127, 128, 191, 192, 255])
    x = (u8.float() / 255).view(1, 1, 1, -1)
    for classes, expected in ((2, [0, 0, 0, 0, 1, 1, 1, 1]), (4, [0, 0, 1, 1, 2, 2, 3, 3])):
        q = quantize(x, classes)
        assert q.shape == (1, classes, 1, 8) and q.dtype == torch.float32
        assert q.argmax(1).flatten().tolist() == expected and torch.equal(q.sum(1), torch.ones(1, 1, 8))
    dm = MNISTDataModule(root=fake_idx(tmp_path), quantize=4, val_size=0)  # the DataModule serves one-hot batches
    dm.setup("fit")
    x, _ = next(iter(dm.train_dataloader()))
    assert x.shape == (64, 4, 28, 28) and torch.equal(x.sum(1), torch.ones(64, 28, 28))
    assert dm.val_x is dm.test_x and dm.val_x.shape[1] == 4  # (bad data.quantize: test_bad_inputs.py)


# ---- the "probability" variant: grey image in, 2 classes per pixel out ---------------------------------------

def test_probability_net_draws_white_with_the_class_1_probability():
    """With one uniform per pixel, white is drawn exactly where u >= p(black), i.e. with probability p(white)."""
    net = make_net("prob-pixel", "predicted")
    for layer in net.layers:
        torch.nn.init.uniform_(layer.bias, -1, 1)
    x = torch.zeros(1, 1, 6, 6)
    u = torch.rand(1, 36, generator=torch.Generator().manual_seed(3))
    white = fill_fast(net, x, mode="categorical", uniforms=u).flatten()
    # patch 0 reads nothing: its probabilities come from the biases alone, whatever was drawn later
    p_black = torch.softmax(net.logits(torch.zeros(1, 1, 6, 6)), 1)[0, 0].flatten()[0]
    assert white[0] == float(u[0, 0] >= p_black)
    grey = sample_images(net, 3, {"mode": "categorical", "temperature": 0.3}, torch.Generator().manual_seed(0))
    assert grey.shape == (3, 1, 6, 6) and set(grey.unique().tolist()) <= {0.0, 1.0}

