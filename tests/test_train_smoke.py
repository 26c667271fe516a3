"""Smoke runs through the real train.py entry point and the real Hydra composition (CPU, seconds each)."""

import json
import re
import subprocess
import time

import pytest
import torch
from omegaconf import OmegaConf

from sarnet.config import validate
from tests.conftest import ROOT, assert_same_run, compose_config, csv_rows, needs_data, ok, run_script, train_inprocess

NLL = {"data.binarize": "dynamic", "likelihood.enabled": True, "loss.kind": "bce", "sample.mode": "bernoulli",
       "sample.th": None, "fid.enabled": False}
STRICT = {"net.first_patch": "predicted", "net.out_activation": "sigmoid"}
CLS = {"model.optimizer._target_": "torch.optim.SGD", "model.optimizer.lr": 0.001, "model.optimizer.momentum": 0.95,
       "trainer.max_epochs": 500, "sample.mode": "categorical", "loss._target_": "sarnet.losses.CrossEntropyLoss",
       "net.out_activation": "softmax", "net.latent_dim": 0}
FASHION = {"data._target_": "sarnet.data.FashionMNISTDataModule", "data.classes": None, "data.val_size": 0,
           "eval_ckpt": "last", "trainer.max_epochs": 22, "fid.extra_th": [0.05, None], "fid.n_gen": 10_000}
SHIPPED = [  # (overrides, what they compose to: config keys, and net.<attribute> of the net validate builds)
    ("latent_dim=16", {"trainer.max_epochs": 200, "sample.th": 0.105, "seed": 1234, "data.batch_size": 64,
                       "fid.n_gen": 10_000, "net.latent_dim": 16, "trainer.precision": "32-true",
                       "trainer.overfit_batches": None}),  # null: train.py leaves it to Lightning's default
    # Lightning's Trainer flags need no "+"
    ("trainer.fast_dev_run=true trainer.precision=bf16-mixed trainer.limit_val_batches=5 trainer.gradient_clip_val=1.0 "
     "trainer.accumulate_grad_batches=2", {"trainer.fast_dev_run": True, "trainer.precision": "bf16-mixed",
                                           "trainer.limit_val_batches": 5, "trainer.gradient_clip_val": 1.0,
                                           "trainer.accumulate_grad_batches": 2}),
    ("latent_dim=8", {"sample.th": 0.095}),  # the reference's threshold follows latent_dim
    ("latent_dim=64", {"sample.th": 0.105}),
    ("model=vae latent_dim=16", {"trainer.max_epochs": 250, "sample.th": None, "net.latent_dim": 16}),
    ("model=sarnet", {"trainer.max_epochs": 500, "loss.ssim_weight": 1.0, "model.optimizer._target_": "torch.optim.SGD",
                      "net.latent_dim": 0}),
    ("trainer=smoke", {"trainer.max_epochs": 1, "fid.n_gen": 200, "fid.n_sets": 2}),  # shrinks training and FID
    *[(f"experiment={experiment}{data}", NLL | {"data.classes": classes} | net)
      for experiment, net in [("nll_sarnet_pixel", STRICT | {"net.patch": 1}),
                              ("nll_sarnet_vae_pixel", STRICT | {"net.patch": 1}),
                              ("nll_sarnet_vae", STRICT | {"net.patch": 4}), ("nll_vae", {})]
      for data, classes in (("", None), (" data=mnist5", [5]))],
    ("experiment=cls_sarnet", CLS | {"net.image_shape": (2, 28, 28), "net.patch": 4}),
    ("experiment=cls_sarnet data.quantize=4", CLS | {"net.image_shape": (4, 28, 28), "net.patch": 4}),
    ("experiment=cls_sarnet model=sarnet_cls_p2", CLS | {"net.image_shape": (2, 28, 28), "net.patch": 2}),
    ("experiment=cls_sarnet data.quantize=4 model=sarnet_cls_p2",
     CLS | {"net.image_shape": (4, 28, 28), "net.patch": 2}),
    ("experiment=cls_sarnet_prob", CLS | {"net.image_shape": (1, 28, 28), "net.out_shape": (2, 28, 28), "net.patch": 4,
                                          "model.net.geometry": [[28, 1, 4], [28, 1, 4], [28, 2, 4], [28, 2, 4]],
                                          "loss.ssim_weight": 1.0, "data.quantize": None}),  # no compression
    # FashionMNIST's FID table: all 60k images validated on the test split, the last weights, 22 epochs
    ("experiment=fid_table_fashion model=sarnet_vae latent_dim=16", FASHION | {"sample.th": 0.105}),
    ("experiment=fid_table_fashion model=vae latent_dim=16", FASHION | {"sample.th": None}),
    # what the bad-input checks must let through
    *[(o, {}) for o in ("scheduler=plateau", "scheduler=cosine", "model=sarnet_bernoulli data.binarize=dynamic",
                        "trainer.limit_val_batches=0 callbacks.checkpoint.monitor=train/loss",
                        "experiment=fashion_mnist", "experiment=fid_table", "experiment=mnist_interpolation")],
]


@pytest.mark.parametrize("overrides, expected", SHIPPED, ids=[s[0] for s in SHIPPED])
def test_shipped_configs_compose_and_build(overrides, expected):
    cfg = compose_config(*overrides.split())
    net = validate(cfg)
    net = net.ar_net or net  # a SarNET-VAE's patches, mode and shapes are its decoder's

    def value(key):
        if key.startswith("net."):
            return getattr(net, key[len("net."):])
        found = OmegaConf.select(cfg, key)
        return OmegaConf.to_container(found) if OmegaConf.is_config(found) else found

    assert {key: value(key) for key in expected} == expected


@needs_data
@pytest.mark.parametrize("model", ["sarnet_vae", "vae", "sarnet", "sarnet_cls", "sarnet_prob"])
def test_smoke_run_writes_results_checkpoints_metrics_and_wandb(model, smoke_run):
    tmp_path = smoke_run(model)
    results = json.loads((tmp_path / "results.json").read_text())
    assert results["status"] == "ok" and results["model"] == model and results["epochs"] == 1
    assert results["steps"] == 3 and results["params"]["dense"] >= results["params"]["effective"] > 0
    assert re.fullmatch(r"cpu \S+, (1 thread|\d+ threads)", results["device"]), results["device"]
    assert results["latent_dim"] == (8 if "vae" in model else None)
    assert results["first_patch"] == (None if model == "vae" else "given")  # the tables keep "predicted" apart
    assert {"val/loss", "test/loss", "train/loss"} <= set(results["metrics"])
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's fresh clone is one): the code that ran
        assert results["code"]["commit"] == head.stdout.strip() and isinstance(results["code"]["dirty"], bool)
    assert (tmp_path / "checkpoints" / "last.ckpt").exists() and (tmp_path / "checkpoints" / "best.ckpt").exists()
    assert "val/loss" in (tmp_path / "csv" / "metrics.csv").read_text()
    assert all(list((tmp_path / "images").glob(f"{grid}_epoch*.png")) for grid in ("samples", "reconstructions"))
    # one W&B run for the training (a script's --wandb may add its own run beside it: no samples_ panels)
    runs = [r for r in (tmp_path / "wandb").glob("offline-run-*") if list(r.glob("files/media/images/samples_*"))]
    assert len(runs) == 1


@needs_data
@pytest.mark.parametrize("eval_ckpt, run_test", [("best", "false"), ("last", "true")])
def test_tiny_fid_scores_the_weights_eval_ckpt_names(eval_ckpt, run_test, tmp_path):
    """The last weights' run is launched as a log file sees it (a subprocess, no terminal): no message twice, no
    advertisement, warning or progress-bar residue, one line per epoch (as in train.log), an end line of metrics."""
    # monitor=step, mode=min: "best" is the first epoch's checkpoint whatever the losses; last.ckpt follows every epoch
    args = ["trainer=smoke", "trainer.max_epochs=2", "latent_dim=8", "fid.extra_th=[0.9]", f"eval_ckpt={eval_ckpt}",
            "callbacks.checkpoint.monitor=step", "callbacks.checkpoint.mode=min", f"run_test={run_test}",
            f"hydra.run.dir={tmp_path}"]
    began = time.time()
    if eval_ckpt == "best":
        train_inprocess(*args, "logger=csv", check=True)
    else:
        out = ok(*args, "trainer.enable_progress_bar=true")
    took = time.time() - began
    results = json.loads((tmp_path / "results.json").read_text())
    assert 0 < results["wall_time_s"] <= took  # one launch: testing best.ckpt must not add its saved wall time
    fid, best = results["metrics"]["fid/mean"], eval_ckpt == "best"
    # what a table cell depends on, the checkpoint relative to the run dir; monitor=step: best's score is its step
    expected = {"eval_ckpt": eval_ckpt, "epochs": 2, "eval_epoch": 1 if best else 2, "dataset": "mnist",
                "eval_score": {"monitor": "step", "mode": "min", "value": results["steps"] // 2} if best else None,
                "checkpoint": f"checkpoints/{eval_ckpt}.ckpt", "classes": [5], "precision": "32-true",
                "sampling": {"method": "fast", "th": 0.095, "z_scale": 1.0, "dtype": "float32"}}
    assert {k: results[k] for k in expected} == expected
    protocol = results["fid_protocol"]
    assert protocol["features"] == "slim-lenet-v1" and len(protocol["features_sha256"]) == 64
    assert (protocol["n_gen"], protocol["n_sets"], protocol["real_set"], protocol["seed"]) == \
        (200, 2, "test_resampled", 2024)
    # th=0.9 blanks most pixels of the barely trained model's samples: the same draws, another FID
    assert len(results["fid_values"]) == 2 and results["fid_matched"]["0.9"]["mean"] != fid
    assert results["knn"] == {"accuracy": results["metrics"]["knn/accuracy"], "n": 200, "k": 4, "seed": 42}
    assert 0.5 <= results["metrics"]["knn/accuracy"] <= 1  # an untrained model is easy to tell from real fives
    assert fid > 0 and results["metrics"]["fid/std"] >= 0
    assert ("test/loss" in results["metrics"]) == (run_test == "true")
    scores = {name: json.loads(run_script("fid.py", "--ckpt", tmp_path / "checkpoints" / f"{name}.ckpt", "--device",
                                          "cpu", check=True)[1])["fid_mean"] for name in ("best", "last")}
    assert scores[eval_ckpt] == pytest.approx(fid, rel=1e-6), scores
    assert abs(scores["best"] - scores["last"]) > 1e-3 * fid, scores  # the two really are different weights
    if eval_ckpt == "best":
        return
    # a message without its decoration: Hydra's "[time][logger][LEVEL] - " or Lightning's own "INFO: "
    messages = [re.sub(r"^(\[[^]]*\]){3} - |^[A-Z]+: ", "", line) for line in out.splitlines() if line.strip()]
    assert len(messages) == len(set(messages)), out
    for noise in ("Tip", "litlogger", "v_num", "FLOPs", "WARNING", "Warning", "━"):
        assert noise not in out, noise
    epochs = [line for line in out.splitlines() if "[sarnet.epochs]" in line]
    assert [re.search(r" - epoch (\d/\d): train/loss [\d.]+, val/loss [\d.]+ \([\d.]+ s", e).group(1)
            for e in epochs] == ["1/2", "2/2"], epochs
    assert epochs == [line for line in (tmp_path / "train.log").read_text().splitlines() if "[sarnet.epochs]" in line]
    assert re.search(r"done: train/loss .* test/loss .* fid/mean .* knn/accuracy .* last weights \(epoch 2 of 2\)", out)


def test_the_net_train_py_trains_starts_from_its_seeds_weights():
    """validate() builds the net train.py trains: its seed alone decides its weights, the global RNG is left alone."""
    def weights(seed):
        return torch.cat([p.detach().flatten() for p in validate(compose_config(f"seed={seed}", "latent_dim=8"))
                          .parameters()])

    torch.manual_seed(0)
    first = weights(1234)
    state = torch.random.get_rng_state()
    again = weights(1234)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, again) and not torch.equal(first, weights(1235))


@pytest.mark.parametrize("trainer", ["cpu", "gpu", "ddp"])
@pytest.mark.parametrize("debug", ["smoke", "fdr", "limit", "overfit", "profiler"])
def test_debug_settings_compose_with_any_trainer_and_after_experiments(debug, trainer, monkeypatch):
    """debug=<name> changes training length and evaluations only, after experiments; trainer=smoke is debug=smoke."""
    monkeypatch.setattr("lightning.fabric.accelerators.CUDAAccelerator.is_available", lambda: True)  # as with a GPU
    plain = compose_config(f"trainer={trainer}", "experiment=nll_sarnet_vae")
    cfg = compose_config(f"trainer={trainer}", "experiment=nll_sarnet_vae", f"debug={debug}")
    for key in ("accelerator", "devices", "strategy"):
        assert cfg.trainer.get(key) == plain.trainer.get(key)
    assert cfg.fid.n_gen == 200 and cfg.likelihood.k == 2 and cfg.trainer.max_epochs < plain.trainer.max_epochs
    validate(cfg)
    if (debug, trainer) == ("smoke", "cpu"):  # trainer=smoke is debug=smoke on the CPU, after experiments too
        smoke = compose_config("trainer=cpu", "debug=smoke", "experiment=fashion_mnist")
        alias = compose_config("trainer=smoke", "experiment=fashion_mnist")  # its max_epochs: 22
        assert OmegaConf.to_container(smoke) == OmegaConf.to_container(alias)


@pytest.mark.slow
@needs_data
def test_gpu_check_script_runs_its_checks_on_the_cpu():
    """`make gpu-check` runs on a CUDA machine only when one is lent; on the CPU it must at least keep working."""
    _, out, _ = run_script("gpu_check.py", "--device", "cpu", "--n", "400", "--epochs", "2", check=True)
    rows = {r["check"]: r for r in map(json.loads, out.splitlines())}
    assert set(rows) == {"device", "smoke_train", "smoke_train_bf16", "fast_equals_naive", "bf16_sampling",
                         "train_epoch", "sample", "fid_set"}
    assert rows["smoke_train"]["ok"] and rows["fast_equals_naive"]["ok"]  # equal up to float summation order
    assert rows["smoke_train_bf16"]["ok"] and rows["smoke_train_bf16"]["precision"] == "bf16-mixed"
    assert rows["bf16_sampling"]["ok"]  # within its bound of float32 sampling
    assert rows["fid_set"]["fid"] > 0 and rows["fid_set"]["bf16_fid"] > 0 and rows["train_epoch"]["bf16_s"] > 0


# mode=max, patience 0: an epoch whose val/loss does not rise is a stall, so a short run (whose val/loss falls)
# divides its lr, and the drops can be predicted from the logged val/loss alone.
STALLING = ["trainer=smoke", "trainer.limit_train_batches=5", "fid=off", "logger=csv", "latent_dim=8",
            "scheduler=plateau", "model.scheduler.patience=0", "model.scheduler.mode=max"]


def logged(run_dir, key) -> list[float]:
    return [float(r[key]) for r in csv_rows(run_dir) if r.get(key)]


@needs_data
def test_plateau_scheduler_divides_the_lr_after_each_epoch_without_improvement(tmp_path):
    train_inprocess(*STALLING, "trainer.max_epochs=4", f"hydra.run.dir={tmp_path}", check=True)
    val, lr = logged(tmp_path, "val/loss"), logged(tmp_path, "train/lr")
    assert len(val) == len(lr) == 4
    expected, best = [1e-3], float("-inf")
    for v in val[:-1]:  # the lr of epoch e + 1: divided by 10 unless epoch e's val/loss beat the best by 1e-4
        improved = v > best * (1 + 1e-4) if best > 0 else v > best
        best = max(best, v)
        expected.append(expected[-1] * (1 if improved else 0.1))
    assert lr == pytest.approx(expected, rel=1e-6) and lr[-1] < lr[0], (val, lr)


@needs_data
def test_cosine_scheduler_anneals_the_lr_over_max_epochs(tmp_path):
    train_inprocess(*STALLING[:5], "scheduler=cosine", "trainer.max_epochs=3", f"hydra.run.dir={tmp_path}", check=True)
    lr = logged(tmp_path, "train/lr")  # epoch e trains at 1e-3 (1 + cos(pi e / 3)) / 2
    assert lr == pytest.approx([1e-3, 7.5e-4, 2.5e-4], rel=1e-6)


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("scheduler", ["none", "plateau", "cosine"])
def test_a_run_extended_by_a_relaunch_equals_an_uninterrupted_one(scheduler, tmp_path):
    # 2 epochs, then relaunched with max_epochs=4 (Lightning skips the checkpoint epoch's plateau step on resuming:
    # sarnet/resume.py, ResumeState). Cosine pins T_max to 4 in both launches (its default would be config drift).
    overrides = {"plateau": STALLING, "none": STALLING[:5],
                 "cosine": [*STALLING[:5], "scheduler=cosine", "model.scheduler.T_max=4"]}[scheduler]
    for run, stops in (("ref", [4]), ("run", [2, 4])):
        for epochs in stops:
            train_inprocess(*overrides, f"trainer.max_epochs={epochs}", f"hydra.run.dir={tmp_path / run}", check=True)
    assert_same_run(tmp_path / "ref", tmp_path / "run")  # weights, optimizer and lr scheduler states, metrics, CSV
