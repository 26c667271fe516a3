"""FID maths, the classifier's cache, the evaluation protocol and kNN accuracy, on tiny synthetic data."""

import json

import pytest
import torch
from torch import nn

from sarnet.data.sources import DataError
from sarnet.metrics import fid as F
from sarnet.metrics.knn import knn_accuracy
from tests.conftest import fake_idx, run_script


class Identity(nn.Module):
    """'Images' are already feature vectors: lets us test the FID maths on known Gaussians. FIDFeatures maps
    [0, 1] images to the network's [-1, 1]; mapping back makes the features exactly the given vectors."""

    def __init__(self, d):
        super().__init__()
        self.num_features = d

    def forward(self, x):
        return ((x + 1) / 2).flatten(1)


def sqrtm(a):
    w, v = torch.linalg.eigh(a)
    return v @ torch.diag(w.clamp(min=0).sqrt()) @ v.T


def closed_form(mu1, s1, mu2, s2):
    r = sqrtm(s1)
    return ((mu1 - mu2) ** 2).sum() + torch.trace(s1 + s2 - 2 * sqrtm(r @ s2 @ r))


def test_fid_matches_closed_form_on_gaussians():
    g = torch.Generator().manual_seed(0)
    d, n = 4, 200_000
    a, b = torch.randn(d, d, generator=g, dtype=torch.float64), torch.randn(d, d, generator=g, dtype=torch.float64)
    s1, s2 = a @ a.T / d + 0.1 * torch.eye(d), b @ b.T / d + 0.1 * torch.eye(d)
    mu1, mu2 = torch.zeros(d, dtype=torch.float64), torch.linspace(-1, 1, d, dtype=torch.float64)
    x1 = mu1 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s1).T
    x2 = mu2 + torch.randn(n, d, generator=g, dtype=torch.float64) @ torch.linalg.cholesky(s2).T
    expect = closed_form(mu1, s1, mu2, s2).item()
    fid = F.make_fid(Identity(d))
    fid.update(x1, real=True)
    fid.update(x2, real=False)
    got = fid.compute()
    assert got.dtype == torch.float64  # the result is not cast back to float32
    assert got.item() == pytest.approx(expect, rel=0.02)
    # the sample statistics themselves give the closed form exactly (tfgan: unbiased covariance)
    exact = closed_form(x1.mean(0), x1.T.cov(), x2.mean(0), x2.T.cov()).item()
    assert got.item() == pytest.approx(exact, rel=1e-8)
    same = F.fid_between(Identity(d), x1[:500], x1[:500])  # identical sets: zero
    assert isinstance(same, float) and 0.0 <= same < 1e-9


# ---- classifier + cache, on a tiny fake dataset in torchvision's raw MNIST layout ----------------------------

def test_lenet_is_slims_lenet():
    net = F.LeNet()
    shapes = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    assert shapes == {"conv1.weight": (32, 1, 5, 5), "conv1.bias": (32,), "conv2.weight": (64, 32, 5, 5),
                      "conv2.bias": (64,), "fc3.weight": (1024, 3136), "fc3.bias": (1024,),
                      "fc4.weight": (10, 1024), "fc4.bias": (10,)}
    w = net.fc3.weight.detach()
    assert w.abs().max() <= 0.2 and 0.08 < w.std() < 0.095 and not net.fc3.bias.any()  # truncated N(0, 0.1)
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    assert net.eval()(x).shape == (4, 10) and torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))  # dropout3 in training only


def test_cache_roundtrip_frozen_pinned_to_eval_out_of_the_lightning_module_refused_if_no_data_stale_or_damaged(
        tmp_path, monkeypatch):
    import lightning as L

    # a first-use cache (the path every dataset without shipped weights takes), trained for 3 steps
    monkeypatch.setattr(F, "SHIPPED_SHA256", {})
    root = fake_idx(tmp_path, "MNIST", 64, 64)
    path, _ = F.train_classifier("mnist", root=root, steps=3, progress=False)
    with pytest.raises(DataError, match="make data"):  # no weights shipped, no cache and no data to train on
        F.load_classifier("mnist", root=root / "no-data")
    net = F.load_classifier("mnist", root=root, train_if_missing=False)
    assert net.meta["checksum"] == F.dataset_checksum("mnist", root) and net.meta["steps"] == 3
    assert not any(p.requires_grad for p in net.parameters()) and not net.training
    features = F.FIDFeatures(net)
    features.train()  # torchmetrics' parent module going .train() must not switch dropout on
    assert not net.training
    x = torch.rand(3, 1, 28, 28)
    assert features(x).dtype == torch.float64 and torch.equal(features(x), net(x * 2 - 1).double())
    module = L.LightningModule()  # the evaluator adds no parameters or state to the module that holds it
    module.layer = nn.Linear(2, 2)
    module.fid = F.FIDEvaluator(net, torch.rand(10, 1, 28, 28), "test", n_gen=10, n_sets=1, seed=0)
    assert len(list(module.parameters())) == 2 and all(k.startswith("layer.") for k in module.state_dict())
    good = path.read_bytes()
    flipped = bytearray(good)  # one flipped bit in a weight: same size, still a readable file
    flipped[flipped.find(net.fc4.weight[0, :4].half().numpy().tobytes())] ^= 0x10
    for damaged in (good[:1000], bytes(flipped)):  # truncated, bit flip
        path.write_bytes(damaged)
        with pytest.raises(F.ClassifierCacheError, match="refused.*delete it and run"):
            F.load_classifier("mnist", root=root, train_if_missing=False)
    path.write_bytes(good)
    fake_idx(root, "MNIST", 64, 64, seed=1)  # the data changed under the cache
    with pytest.raises(F.ClassifierCacheError, match="other data.*delete it and run sarnet train-classifier"):
        F.load_classifier("mnist", root=root, train_if_missing=True)


@pytest.mark.parametrize("dataset, min_acc", [("mnist", 0.985), ("fashion_mnist", 0.885)])
def test_shipped_weights_load_without_data_and_refuse_a_flipped_bit(tmp_path, dataset, min_acc, monkeypatch):
    """(train.py's one line on tampered weights: test_bad_inputs.py)"""
    assert dataset in F.SHIPPED_SHA256, f"the {dataset} feature network ships with the package"
    path = F.classifier_path(dataset, tmp_path)
    assert path == F.WEIGHTS_DIR / f"lenet_{dataset}.pt"  # not the data cache
    net = F.load_classifier(dataset, root=tmp_path / "no-data-here", train_if_missing=False)  # no data, no training
    assert net.meta["sha256"] == F.SHIPPED_SHA256[dataset] and net.meta["dataset"] == dataset
    assert net.meta["test_acc"] > min_acc and net.fc3.weight.dtype == torch.float32 and not net.training
    monkeypatch.setattr(F, "WEIGHTS_DIR", tmp_path)
    for where in ("header", "weights"):
        data = bytearray(path.read_bytes())
        data[100 if where == "header" else len(data) // 2] ^= 0x01
        (tmp_path / path.name).write_bytes(bytes(data))
        with pytest.raises(F.ClassifierCacheError, match=rf"lenet_{dataset}.pt is refused .*sha256.*pinned.*"
                                                          rf"git checkout .*re-train it: sarnet train-classifier"):
            F.load_classifier(dataset, root=tmp_path / "no-data", train_if_missing=False)


# ---- protocol ----------------------------------------------------------------------------------------------

def toy_generate(n, generator):
    return torch.rand(n, 1, 28, 28, generator=generator) * 0.8


def test_protocol_reproducible_population_std_and_real_features_computed_once():
    torch.manual_seed(0)  # the same untrained net whatever ran before (tests run in any order)
    net = F.LeNet().requires_grad_(False)  # untrained is fine: we only test the protocol plumbing
    pool = torch.randint(0, 256, (50, 28, 28), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    kw = {"n_gen": 60, "n_sets": 3, "batch_size": 25}
    r1, r2 = (F.FIDEvaluator(net, pool, "test_resampled", seed=2024, **kw).evaluate(toy_generate) for _ in range(2))
    assert r1 == r2 and len(r1["values"]) == 3 and all(isinstance(v, float) for v in r1["values"])
    assert r1["std"] == pytest.approx(torch.tensor(r1["values"], dtype=torch.float64).std(correction=0).item())
    assert r1["values"][0] != r1["values"][1]  # fresh generated and real draws per set
    # test_resampled: each set against n_gen draws of the few real images, whose features are computed once and
    # indexed: the FID of the drawn images themselves (the plain path), up to float32 summation order
    g_gen, g_real = torch.Generator().manual_seed(2024), torch.Generator().manual_seed(2025)  # the two streams
    for value in r1["values"]:
        real = pool[torch.randint(len(pool), (60,), generator=g_real)]
        fake = torch.cat([toy_generate(25, g_gen), toy_generate(25, g_gen), toy_generate(10, g_gen)])
        assert value == pytest.approx(F.fid_between(net, real, fake, batch_size=25), rel=1e-6)
    assert F.FIDEvaluator(net, pool, "test_resampled", seed=7, **kw).evaluate(toy_generate)["values"] != r1["values"]
    fixed, lines = F.FIDEvaluator(net, pool, "train", seed=2024, **kw), []
    result = fixed.evaluate(toy_generate, lines.append)  # with a line of progress per set
    assert fixed.evaluate(toy_generate) == result  # real stats kept across evaluations
    assert fixed.fid.real_features_num_samples.item() == 50
    assert [line.split(":")[0] for line in lines] == ["FID set 1/3", "FID set 2/3", "FID set 3/3"]
    assert [float(line.split(": ")[1].split(" ")[0]) for line in lines] == pytest.approx(result["values"], abs=1e-4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        fixed.evaluate(lambda n, g: torch.rand(n, 1, 28, 28, generator=g) * 2)


def test_calibrate_on_fashion_mnist_takes_all_classes_and_has_no_thesis_column(tmp_path):
    """The thesis' anchors are MNIST fives' values: on FashionMNIST all ten classes, the FIDs alone (no ratios)."""
    fake_idx(tmp_path, "FashionMNIST", 200, 60)
    weights = tmp_path / "lenet.pt"
    F.train_classifier("fashion_mnist", root=tmp_path, path=weights, steps=2, progress=False)
    _, out, _ = run_script("calibrate_fid.py", "--dataset", "fashion_mnist", "--root", tmp_path, "--weights", weights,
                           "--n", "40", "--out", tmp_path / "c.json", "--threads", "1", cwd=tmp_path, check=True)
    assert "fashion_mnist, classes all, N=40 vs 40" in out and "| comparison | lenet |" in out and "thesis" not in out
    rows = json.loads((tmp_path / "c.json").read_text())["rows"]
    assert len(rows) == 9 and all(r["reference"] is None and r["ours"]["lenet"] >= 0 for r in rows)


# ---- kNN: chance on identical sets, perfect on disjoint ones, seeded ----------------------------------------

def blobs(n, shift, seed):
    return torch.rand(n, 1, 28, 28, generator=torch.Generator().manual_seed(seed)) * 0.5 + shift


def resampled(pool, seed):
    """Two draws with replacement from a small pool: the reference's setting for real images (892 test fives)."""
    g = torch.Generator().manual_seed(seed)
    return (pool[torch.randint(len(pool), (1000,), generator=g)] for _ in range(2))


@pytest.mark.parametrize("sets, low, high", [
    (lambda: (blobs(1000, 0.0, 0), blobs(1000, 0.0, 1)), 0.4, 0.6),  # one distribution: chance
    (lambda: resampled(blobs(300, 0.0, 0), 1), 0.4, 0.6),  # two resamples of one pool: chance too
    # exact copies: a held-out image's twin, with the other label, is its nearest neighbour 70 % of the time
    (lambda: (blobs(1000, 0.0, 0), blobs(1000, 0.0, 0)), 0.25, 0.45),
    (lambda: (blobs(1000, 0.0, 0), blobs(1000, 0.5, 1)), 1.0, 1.0),  # disjoint sets are told apart
], ids=["same", "resampled", "copies", "disjoint"])
def test_accuracy_on_known_pairs_of_sets_seeded(sets, low, high):  # (k=0 refused: tests/bad_inputs.py API)
    a, b = sets()
    assert low <= knn_accuracy(a, b, seed=3) <= high and knn_accuracy(a, b, seed=3) == knn_accuracy(a, b, seed=3)
