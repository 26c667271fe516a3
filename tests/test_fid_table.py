"""scripts/fid_table.py on fabricated sweep dirs: seeds, duplicates, protocols and datasets never merged."""

import pytest
from omegaconf import OmegaConf

from sarnet.metrics.fid import SHIPPED_SHA256
from tests.conftest import ROOT, fake_run, table

CPU, GPU = "cpu x86_64, 1 threads", "NVIDIA H100 80GB HBM3"


def test_seeds_aggregate_with_seed_and_set_std_welch_and_wall_time(tmp_path):
    sweep = tmp_path / "sweep"
    for i, (model, seed, fid, wall, device) in enumerate([
            ("sarnet_vae", 1234, 1.0, 600.0, CPU), ("sarnet_vae", 1235, 2.0, 1200.0, CPU),
            ("sarnet_vae", 1236, 3.0, 900.0, CPU), ("vae", 1234, 4.0, 3000.0, CPU), ("vae", 1235, 5.0, 540.0, GPU),
            ("vae", 1236, 6.0, 600.0, None)]):  # None: a results.json that predates the field
        fake_run(sweep / f"{i}", model, 32, seed, fid=fid, wall=wall, device=device)
    fake_run(sweep / "9", "vae", 8, 1234, status="failed")
    (sweep / "8").mkdir()  # a run without FID (fid=off): neither a cell nor a failed job
    (sweep / "8" / "results.json").write_text('{"status": "ok", "model": "vae", "metrics": {"test/loss": 1}}')
    result, md, out = table(tmp_path, sweep)
    (t,) = result["tables"]
    rows = {(r["model"], r["latent_dim"]): r for r in t["rows"]}
    cell = rows[("sarnet_vae", 32)]
    assert cell["fid_mean"] == 2.0 and cell["fid_seed_std"] == 1.0 and abs(cell["fid_set_std"] - 0.1) < 1e-12
    assert sorted(cell["seeds"]) == [1234, 1235, 1236]
    assert rows[("vae", 8)]["status"] == "failed" and rows[("sarnet_vae", 16)]["status"] == "missing"
    assert rows[("vae", 16)]["status"] == "missing" and f"{sweep / '8'}:" not in md
    assert ("sarnet", None) not in rows  # no simple-SarNET run given: no row for it
    (w,) = t["welch"]
    assert w["latent_dim"] == 32 and w["seeds"] == [3, 3] and 0 < w["p"] < 0.1
    assert t["matched"]["none"]["rows"][0]["fid_mean"] == 3.0  # the matched-threshold table
    assert "FID (thesis)" in md and "1.580" in md and "Welch" in md and "Matched threshold th = none" in md
    assert cell["knn_accuracy"] == 0.6 and "| 60.0 % |" in md
    assert out.with_suffix(".png").stat().st_size > 5000
    assert rows[("vae", 32)]["devices"] == [GPU, "None", CPU]
    assert "| 15.0 min |" in md and "| 9.0–50.0 min |" in md  # sarnet_vae: one device, mean; vae: three, range
    result, _, _ = table(tmp_path, sweep, sweep)  # the same runs given twice count once
    assert result["tables"][0]["rows"] == t["rows"]
    fake_run(tmp_path / "other" / "0", "sarnet_vae", 32, 1234, fid=1.2)  # another run of a seed: refused
    status, _, stderr = table(tmp_path, sweep, tmp_path / "other", check=False)
    assert status == 2 and "seed 1234 appears twice" in stderr


def drew(**sampling):
    return {"extra": {"sampling": sampling}}


THESIS = "10 x 10000 images"  # what the thesis' protocol's description says
# sarnet_vae runs at L = 32, (seed, FID, fake_run's keywords) -> the tables they make, in order: (on the thesis'
# protocol, what the description says, the FID of each draw's cell)
SEPARATE = {
    "protocols": ([(1234, 1.0, {}), (1235, 9.0, {"n_gen": 500}),  # a smoke-sized FID, FashionMNIST, other features
                   (1236, 7.0, {"dataset": "fashion_mnist", "classes": None}),
                   (1237, 8.0, {"features_sha256": "cd" * 32})],
                  [(True, THESIS, {"": 1.0}), (False, "fashion_mnist", {"": 7.0}),
                   (False, "10 x 500 images", {"": 9.0}), (False, "(cdcdcdcdcdcd)", {"": 8.0})]),
    "draws": ([(1234, 1.0, {}), (1235, 2.0, {}), (1234, 5.0, drew(mode="bernoulli", temperature=0.3)),
               (1235, 6.0, drew(mode="bernoulli", temperature=1.0)), (1236, 7.0, drew(regression={"alpha_max": 0.5}))],
              [(True, THESIS, {"": 1.5, " (bernoulli T=0.3)": 5.0, " (bernoulli T=1)": 6.0, " (alpha_max 0.5)": 7.0})]),
    "dtypes": ([(1234, 1.0, {}), (1234, 2.0, drew(dtype="bfloat16")), (1234, 3.0, {"dtype": "bfloat16"})],
               [(True, THESIS, {"": 1.0, " (sampled bfloat16)": 2.0}), (False, "bfloat16)", {"": 3.0})]),
}


@pytest.mark.parametrize("case", SEPARATE)
def test_protocols_datasets_draws_and_dtypes_are_never_one_cell(tmp_path, case):
    runs, expected = SEPARATE[case]
    for i, (seed, fid, kw) in enumerate(runs):
        fake_run(tmp_path / "sweep" / str(i), "sarnet_vae", 32, seed, fid=fid, **kw)
    result, md, _ = table(tmp_path, tmp_path / "sweep")
    for t, (thesis, says, means) in zip(result["tables"], expected, strict=True):
        ok = {r["draw"]: r["fid_mean"] for r in t["rows"] if r["status"] == "ok"}
        assert (t["thesis_protocol"], ok) == (thesis, means) and says in t["description"], t["description"]
        assert thesis or len(t["rows"]) == len(ok)  # only the thesis' protocol lists its missing cells
        assert sorted(r["fid_mean"] for r in t["matched"]["none"]["rows"]) == sorted(m + 1 for m in means.values())
        assert all(f"sarnet_vae{draw}" in md for draw in means)
    assert md.count("FID (thesis)") == 1  # only beside the thesis' protocol


def test_fashion_table_keeps_the_strict_first_patch_apart(tmp_path):
    """The FashionMNIST table (its own feature network, no thesis column) with the strict comparison at one L run
    with the same seeds: patch 0 predicted is its own row and Welch test, never a duplicate seed of the reference's."""
    fashion = {"dataset": "fashion_mnist", "classes": None, "features_sha256": SHIPPED_SHA256.get("fashion_mnist")}
    for model, fid, first_patch in [("sarnet_vae", 6.0, "given"), ("sarnet_vae", 9.0, "predicted"), ("vae", 8.0, None)]:
        for i, seed in enumerate((1234, 1235, 1236)):
            fake_run(tmp_path / "sweep" / f"{model}_{first_patch}_{seed}", model, 32, seed, fid=fid + i,
                     first_patch=first_patch, **fashion)
    result, md, out = table(tmp_path, tmp_path / "sweep")
    (t,) = result["tables"]
    assert t["dataset"] == "fashion_mnist" and not t["thesis_protocol"] and "FID (thesis)" not in md
    rows = {(r["model"], r["draw"]): r["fid_mean"] for r in t["rows"]}
    assert rows == {("sarnet_vae", ""): 7.0, ("sarnet_vae", " (patch 0 predicted)"): 10.0, ("vae", ""): 9.0}
    assert [(w["a"], w["b"], w["mean_a"], w["mean_b"]) for w in t["welch"]] == [
        ("sarnet_vae", "vae", 7.0, 9.0), ("sarnet_vae", "sarnet_vae (patch 0 predicted)", 7.0, 10.0)]
    assert "Welch t-test over training seeds, sarnet_vae vs sarnet_vae (patch 0 predicted)" in md
    assert out.with_suffix(".png").stat().st_size > 5000


def test_the_thesis_values_sit_only_beside_runs_of_its_recipe(tmp_path, monkeypatch):
    """A 3-epoch sweep on the thesis' protocol: its table and plot carry no thesis value; at the recipe's epochs
    (conf/recipe/: 200 SarNET-VAE, 250 VAE, 500 simple SarNET) they do, and the plot draws the thesis' curve."""
    from sarnet import table as T

    short, full = tmp_path / "short", tmp_path / "full"
    for i, model in enumerate(["sarnet_vae", "vae"]):
        fake_run(short / f"{i}", model, 32, 1234, fid=50.0, epochs=3)
        fake_run(full / f"{i}", model, 32, 1234, fid=2.0)
    fake_run(full / "2", "vae", 32, 1235, fid=9.0, epochs=100)  # another length in the same table: no thesis
    plotted = []
    monkeypatch.setattr("matplotlib.axes.Axes.plot", lambda self, *a, **k: plotted.append(k.get("label")))
    (t,) = T.build_tables(*T.collect([short]))
    T.plot(t, tmp_path / "s.png")
    assert all(r["thesis"] is None for r in t["rows"]) and plotted == []
    (t,) = T.build_tables(*T.collect([full]))
    T.plot(t, tmp_path / "f.png")
    thesis = {(r["model"], r["latent_dim"], r.get("epochs")): r["thesis"] for r in t["rows"]}
    assert thesis[("sarnet_vae", 32, 200)] == T.THESIS[("sarnet_vae", 32)]
    assert thesis[("vae", 32, 250)] == T.THESIS[("vae", 32)] and thesis[("vae", 32, 100)] is None
    assert thesis[("sarnet_vae", 8, None)] == T.THESIS[("sarnet_vae", 8)]  # a missing cell of a recipe model
    assert plotted == ["sarnet_vae, 200 epochs (thesis)", "vae, 250 epochs (thesis)"]


def test_fashion_table_sweeps_l_model_and_seed():  # what one of its jobs composes to: test_train_smoke.py
    sweep = OmegaConf.load(ROOT / "conf" / "experiment" / "fid_table_fashion.yaml").hydra.sweeper.params
    assert {k: str(v).split(",") for k, v in sweep.items()} == {
        "latent_dim": ["32", "8", "128", "16", "64"], "model": ["sarnet_vae", "vae"], "seed": ["1234", "1235", "1236"]}
