"""Generative XGBoost (sarnet/xgb.py): train a few patches on synthetic images, save, load, generate."""

import json

import numpy as np
import pytest
import torch

pytest.importorskip("xgboost")

from sarnet import xgb  # noqa: E402
from tests.conftest import needs_data, run_script  # noqa: E402

PATCHES = 6  # models for patches 1..6: a few seconds with one thread
SMALL = dict(rounds=5, depth=3, refine_rounds=3, refine_depth=2, threads=1)


def fake_fives(n=300, seed=0):
    """Blobs of varying brightness and size on a blank background, float [n, 1, 28, 28] in [0, 1]."""
    g = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(28.0), torch.arange(28.0), indexing="ij")
    centre = 2 + 10 * torch.rand(n, 2, generator=g)  # blobs near the top-left, where the first patches are
    radius = 2 + 4 * torch.rand(n, 1, 1, generator=g)
    d2 = (yy - centre[:, 0, None, None]) ** 2 + (xx - centre[:, 1, None, None]) ** 2
    return (torch.exp(-d2 / radius ** 2) * torch.rand(n, 1, 1, generator=g)).clamp(0, 1).unsqueeze(1)


@pytest.fixture(scope="module", params=["raster", "column"])
def model(request):
    return xgb.GenerativeXGB.train(fake_fives(), order=request.param, max_patches=PATCHES, **SMALL)


def test_patch_orders_round_trip_and_differ():
    x = fake_fives(4)
    for order in xgb.ORDERS:
        assert torch.equal(xgb.to_images(xgb.to_patches(x, order), order), x)
    raster, column = xgb.patch_index("raster"), xgb.patch_index("column")
    assert raster[1].tolist() == [2, 3, 30, 31]  # raster: patch 1 is right of patch 0
    assert column[1].tolist() == [56, 57, 84, 85]  # column-major (the reference): patch 1 is below patch 0
    assert sorted(column.ravel().tolist()) == list(range(784))


def test_generate_shapes_range_seed_save_load_and_each_patch_reads_only_earlier_ones(model, tmp_path):
    a = model.generate(20, 3)
    assert a.shape == (20, 1, 28, 28) and a.dtype == torch.float32
    assert a.min() >= 0 and a.max() <= 1
    assert torch.equal(a, model.generate(20, 3))  # same seed, same images
    g1, g2 = torch.Generator().manual_seed(7), torch.Generator().manual_seed(7)
    assert torch.equal(model.generate(20, g1), model.generate(20, g2))
    assert not torch.equal(a, model.generate(20, 4))  # the early-patch randomisation differs
    patches = xgb.to_patches(a, model.order)
    assert patches[:, 1:PATCHES + 1].any() and not patches[:, PATCHES + 1:].any()  # untrained patches stay 0
    path = model.save(tmp_path / "model")
    again = model.save(path)  # overwriting an existing folder: the whole new model, no temp folders left
    assert again == path and sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    loaded = xgb.GenerativeXGB.load(path, threads=1)
    assert loaded.meta == model.meta
    assert torch.equal(loaded.generate(16, 5), model.generate(16, 5))
    # the model of patch k reads only the patches before it
    rng = np.random.default_rng(0)
    patches = xgb.to_patches(fake_fives(50, seed=1), model.order)
    for k in range(1, PATCHES + 1):
        changed = patches.copy()
        changed[:, k:] = rng.random(changed[:, k:].shape)  # rewrite patch k and everything after it
        assert np.array_equal(model.predict_patch(patches, k), model.predict_patch(changed, k))
        earlier = patches.copy()
        earlier[:, :k] = rng.random(earlier[:, :k].shape)  # while earlier patches matter
        assert not np.array_equal(model.predict_patch(patches, k), model.predict_patch(earlier, k))


def test_load_refuses_a_folder_without_a_model_and_bad_settings_name_the_field(tmp_path):
    with pytest.raises(xgb.XGBError, match="meta.json"):
        xgb.GenerativeXGB.load(tmp_path)
    (tmp_path / "meta.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(xgb.XGBError, match="format"):
        xgb.GenerativeXGB.load(tmp_path)
    x = fake_fives(10)
    for settings, field in (({"max_patches": 196}, "max_patches=196"), ({"rounds": 0}, "rounds=0"),
                            ({"order": "diagonal"}, "order='diagonal'")):
        with pytest.raises(xgb.XGBError, match=field):
            xgb.GenerativeXGB.train(x, **{"max_patches": 1, **settings}, threads=1)


def test_an_interrupted_training_resumes_to_the_uninterrupted_model(tmp_path):
    """Patches in resume_dir are loaded, not retrained, into the uninterrupted run's model; other settings refused."""
    images, kw = fake_fives(), SMALL
    whole = xgb.GenerativeXGB.train(images, max_patches=4, **kw)
    partial = tmp_path / "model.partial"
    xgb.GenerativeXGB.train(images, max_patches=2, resume_dir=partial, **kw)  # "killed" after patch 2
    trained = []
    resumed = xgb.GenerativeXGB.train(images, max_patches=4, resume_dir=partial, **kw,
                                      progress=lambda k, n, s: trained.append(k))
    assert trained == [3, 4] and resumed.meta["train_s"] > 0
    assert torch.equal(resumed.generate(50, 7), whole.generate(50, 7))
    with pytest.raises(xgb.XGBError, match="other next: delete it"):
        xgb.GenerativeXGB.train(images, max_patches=4, resume_dir=partial, **kw | {"rounds": 6})
    with pytest.raises(xgb.XGBError, match="other images_sha256"):
        xgb.GenerativeXGB.train(fake_fives(seed=1), max_patches=4, resume_dir=partial, **kw)


@needs_data
def test_script_trains_scores_and_leaves_only_the_whole_model(tmp_path):
    out = tmp_path / "xgb"
    run_script("xgb.py", "--out", out, "--max-patches", "3", "--train-images", "300", "--rounds", "3",
               "--refine-rounds", "2", "--n-gen", "300", "--n-sets", "1", "--threads", "1", check=True)
    result = json.loads((out / "results.json").read_text())
    assert result["settings"]["trained_patches"] == 3 and result["train_wall_s"] > 0
    assert result["fid_mean"] > 0 and 0.5 <= result["knn"]["accuracy"] <= 1
    assert (out / "model" / "meta.json").exists() and (out / "samples.png").exists()
    assert not (out / "model.partial").exists()
