"""Reliability: fail-fast configs, atomic checkpoints and the CSV on resume (resume after SIGKILL: test_trust.py),
the NaN guard, sweeps with a failing job, scale-out (DDP on CPU, joblib, submitit) and damaged data, classifier
caches and checkpoints.

Most tests run the real train.py as a subprocess. Fast ones fail before any data or model work (a few seconds,
mostly interpreter and torch start-up); the ones that train are marked slow.
"""

import collections
import os
import shlex
import signal
import sys
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from sarnet.checkpoint import CheckpointError, load_model, read_checkpoint
from sarnet.config import ConfigError, validate
from sarnet.resume import AtomicCheckpointIO, NonFiniteWeightsError, continue_csv
from sarnet.train import check_checkpoint
from tests.conftest import (
    ROOT,
    assert_autoregressive,
    compose_config,
    csv_rows,
    dependence,
    error_line,
    needs_data,
    ok,
    results,
    train,
    train_inprocess,
)

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]  # two gloo processes on the CPU


# ---- 1. fail-fast configs (the table of bad inputs: tests/test_bad_inputs.py) ----------------------------

def test_the_precisions_config_accepts_are_lightnings():
    import typing

    from lightning.fabric.connector import _PRECISION_INPUT

    from sarnet.fields import PRECISIONS

    def flat(t):
        return [v for a in typing.get_args(t) for v in (flat(a) if typing.get_args(a) else [a])]
    assert sorted(map(str, PRECISIONS)) == sorted(map(str, flat(_PRECISION_INPUT)))



@st.composite
def net_fields(draw):
    """-> (model, {config key: value}): mostly well-formed geometries (the patch grids agree), some broken."""
    model = draw(st.sampled_from(["sarnet", "sarnet_vae"]))
    patch = draw(st.sampled_from([2, 4, 7, 14]))  # 196, 49, 16 or 4 patches of the 28 x 28 input
    grid = 28 // patch
    hidden = draw(st.lists(st.tuples(st.integers(1, 3), st.integers(1, 2)), max_size=2))  # (patch, channels)
    geometry = [[28, 1, patch], *([grid * p, c, p] for p, c in hidden), [28, 1, patch]]
    if draw(st.integers(0, 2)) == 0:  # break one entry (a third of the time)
        i, j = draw(st.integers(0, len(geometry) - 1)), draw(st.integers(0, 2))
        geometry[i][j] = draw(st.sampled_from([0, -1, 1, 2, 3, 5, 6, 14, 28, 4.5, "x"]))
    first_patch = draw(st.sampled_from(["given", "predicted"] * 3 + ["first"]))
    latent = draw(st.integers(-1, 4))
    return model, {"model.net.geometry": geometry, "model.net.first_patch": first_patch,
                   "latent_dim" if model == "sarnet_vae" else "model.net.latent_dim": latent}


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")  # a 0-channel geometry
def test_validate_accepts_only_autoregressive_nets_and_refuses_with_config_error():
    """Random geometry / first_patch / latent_dim on the composed configs (hydra.compose once per model, ~80 ms,
    then the fields set on a copy): accepted -> autoregressive by gradients; refused -> ConfigError only."""
    seen = collections.Counter()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        # callbacks=none: the image grids' keep_patches=24 is (rightly) refused for nets of fewer patches
        composed = {m: compose("config", overrides=[f"model={m}", "callbacks=none"]) for m in ("sarnet", "sarnet_vae")}

    @settings(max_examples=80, deadline=None, derandomize=True)  # a fixed stream: 29 accepted, 51 refused
    @given(net_fields())
    def check(example):
        model, fields = example
        cfg = composed[model].copy()
        for key, value in fields.items():
            OmegaConf.update(cfg, key, value)
        try:
            net = validate(cfg)  # anything but ConfigError propagates and fails the test
        except ConfigError as e:
            assert "\n" not in str(e) and "=" in str(e)
            seen["refused"] += 1
            return
        seen["accepted"] += 1
        dec = net.ar_net
        # Non-negative weights, inputs and z, positive biases: every ReLU is on and no two paths cancel, so the
        # gradient pattern is exactly the connectivity the masks allow.
        with torch.no_grad():
            for layer in dec.layers:
                layer.weight.abs_()
                layer.bias.fill_(1.0)
        torch.manual_seed(0)
        z = torch.rand(1, dec.latent_dim) if dec.latent_dim else None
        dep = dependence(lambda v: dec.logits(v, z), torch.rand(1, *dec.image_shape), dec.layers[-1].deg_out,
                         dec.layers[0].deg_in, dec.n_patches)
        assert_autoregressive(dep, dec.first_patch)

    check()
    assert seen["accepted"] >= 15 and seen["refused"] >= 10, seen


# ---- 2. checkpoints and the CSV on resume ----------------------------------------------------------------

@pytest.mark.filterwarnings("ignore:Experiment logs directory")  # the deletion we undo
@pytest.mark.parametrize("killed", ["mid-epoch", "before the train row"])
def test_resume_puts_back_the_csv_rows_up_to_the_checkpoint(tmp_path, killed):
    from lightning.pytorch.loggers import CSVLogger

    # Killed in epoch 2 after its val row was flushed, or just after epoch 1's checkpoint, whose train row
    # Lightning logs after the checkpoint: then it comes from the checkpoint.
    rows = "0,19,,5.0\n0,19,6.0,\n1,39,,4.0\n" + ("1,39,5.0,\n2,59,,3.0\n" if killed == "mid-epoch" else "")
    (tmp_path / "csv").mkdir()
    (tmp_path / "csv" / "metrics.csv").write_text("epoch,step,train/loss,val/loss\n" + rows)
    row = {"train/loss": 5.0, "epoch": 1, "step": 39}
    torch.save({"epoch": 1, "global_step": 40, "sarnet_run": {"train_row": row}}, tmp_path / "last.ckpt")
    logger = CSVLogger(tmp_path, name="csv", version="")
    continue_csv([logger], str(tmp_path / "last.ckpt"))
    logger.log_metrics({"val/loss": 3.5, "epoch": 2}, step=59)
    logger.save()
    assert [(r["epoch"], r["step"], r["val/loss"], r["train/loss"]) for r in csv_rows(tmp_path)] == [
        ("0", "19", "5.0", ""), ("0", "19", "", "6.0"), ("1", "39", "4.0", ""), ("1", "39", "", "5.0"),
        ("2", "59", "3.5", "")]


# ---- 3. NaN / Inf guard ----------------------------------------------------------------------------------

def test_non_finite_loss_names_epoch_step_and_term():
    from sarnet.losses import ReconstructionLoss
    from sarnet.module import NonFiniteLossError, SarnetModule
    from sarnet.nn import SarNet

    module = SarnetModule(SarNet(), ReconstructionLoss("power", power=1.0, reduction="mean"), optimizer=None)
    x = torch.rand(2, 1, 28, 28)
    x[0, 0, 5, 5] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"at epoch 0, step 0 \(term: recon\); the last good checkpoint"):
        module.training_step((x, None), 0)


def test_checkpoint_with_non_finite_weights_is_not_written(tmp_path):
    io, path = AtomicCheckpointIO(), tmp_path / "last.ckpt"
    io.save_checkpoint({"state_dict": {"net.w": torch.ones(3)}, "epoch": 0, "global_step": 3}, path)
    before = path.read_bytes()
    with pytest.raises(NonFiniteWeightsError, match=r"epoch 1, step 6 \(net.w\).*last good checkpoint is kept"):
        io.save_checkpoint({"state_dict": {"net.w": torch.tensor([1.0, float("inf"), 0])}, "epoch": 1,
                            "global_step": 6}, path)
    assert path.read_bytes() == before


# ---- 4. a sweep with a failing job -----------------------------------------------------------------------

@pytest.mark.slow
@needs_data
def test_sweep_reports_the_failed_job_and_keeps_the_others(tmp_path):
    rc, out, _ = train("-m", "latent_dim=0,8", "trainer=smoke", "fid=off", "logger=csv",
                       f"hydra.sweep.dir={tmp_path}")
    assert rc != 0
    failed, good = results(tmp_path / "0_fid=off,latent_dim=0"), results(tmp_path / "1_fid=off,latent_dim=8")
    assert failed["status"] == "failed" and failed["error"].startswith("ConfigError: latent_dim=0 is invalid")
    assert good["status"] == "ok" and good["steps"] == 3
    assert "1 jobs ok, 1 failed" in out and "failed: 0_fid=off,latent_dim=0: ConfigError" in out


@pytest.mark.slow
@needs_data
def test_sigterm_to_a_sweep_prints_the_command_that_resumes_its_jobs(tmp_path):
    """Stopped in its first job's second epoch, the sweep names the command that resumes it; that command, run as
    printed (less the injected fault), resumes the stopped job from its checkpoint and runs the other one."""
    rc, out, _ = train("-m", "trainer=smoke", "trainer.max_epochs=2", "fid=off", "logger=csv", "latent_dim=8,16",
                       f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${hydra.job.num}",  # the fault not in it
                       "+callbacks.fault._target_=tests.faults.SigtermAtEpoch", "+callbacks.fault.epoch=1",
                       timeout=600)
    assert rc == 128 + signal.SIGTERM and "Traceback" not in out
    command = shlex.split(error_line(out, "RunDirError").split("to resume the sweep: ", 1)[1])
    python = os.path.relpath(sys.executable, ROOT) if Path(sys.executable).is_relative_to(ROOT) else "python"
    assert command[:3] == [python, "train.py", "-m"] and command[-1] == f"hydra.sweep.dir={tmp_path}"
    rc, out, _ = train(*[a for a in command[2:] if not a.startswith("+callbacks.fault")], timeout=900)
    assert rc == 0, out[-3000:]
    assert f"Restoring states from the checkpoint path at {tmp_path}/0/checkpoints/last.ckpt" in out
    assert [(r["status"], r["epochs"]) for r in (results(tmp_path / job) for job in "01")] == [("ok", 2)] * 2
    assert all(p.read_text() == "" for p in tmp_path.glob("*/.lock"))  # released


@pytest.mark.slow
@needs_data
def test_optuna_search_reports_the_best_trial_and_resumes_from_its_sweep_dir(tmp_path):
    args = ["hparams_search=optuna", "trainer=smoke", "fid=off", "logger=csv", "hydra.sweeper.n_trials=2",
            f"hydra.sweep.dir={tmp_path}"]
    out = ok(*args, timeout=900)
    jobs = sorted(p.parent for p in tmp_path.glob("*/results.json"))
    losses = [results(j)["metrics"]["val/loss"] for j in jobs]
    assert len(jobs) == 2 and losses[0] != losses[1]  # two trials with other hyperparameters
    best = OmegaConf.load(tmp_path / "optimization_results.yaml")
    assert best.best_value == min(losses) and f"Best value: {min(losses)}" in out
    # relaunched into its sweep dir: the seeded sampler proposes the same trials, whose finished jobs are skipped
    out = ok(*args, timeout=900)
    assert out.count("finished earlier with this same config: nothing to do") == 2
    assert OmegaConf.load(tmp_path / "optimization_results.yaml") == best


# ---- 5. scale-out: DDP on CPU, joblib, submitit, SLURM ------------------------------------------------------

@pytest.mark.slow
@needs_data
def test_ddp_on_two_cpu_processes(tmp_path):
    """The documented DDP command with FID (torchmetrics must not wait for ranks that do not score) and W&B: one
    results.json, one W&B run, one summary line."""
    out = ok(*DDP, "trainer.max_epochs=1", "trainer.limit_train_batches=4", "fid.n_gen=200", "fid.n_sets=1",
             f"hydra.run.dir={tmp_path}")
    res = results(tmp_path)
    assert res["status"] == "ok" and (res["epochs"], res["steps"]) == (1, 4)  # 4 steps on each rank
    assert (tmp_path / "train_ddp_process_1.log").exists()  # rank 1 was a second train.py process
    runs = [p for p in tmp_path.rglob("results.json") if "wandb" not in p.relative_to(tmp_path).parts]
    assert len(runs) == 1 and len(list(tmp_path.glob("wandb/offline-run-*"))) == 1
    assert {"fid/mean", "knn/accuracy", "test/loss"} <= set(res["metrics"]) and out.count("done: ") == 1
    assert "sync_dist" not in out and "DistributedSampler" not in out  # the warnings of unsynced metrics
    assert read_checkpoint(tmp_path / "checkpoints" / "last.ckpt")["global_step"] == 4


@pytest.mark.slow
@needs_data
def test_debug_smoke_on_ddp_runs_two_processes(tmp_path):
    ok(*DDP, "debug=smoke", "fid=off", "logger=csv", "latent_dim=8", f"hydra.run.dir={tmp_path}")
    assert (tmp_path / "train_ddp_process_1.log").exists() and results(tmp_path)["steps"] == 3


@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("model", ["sarnet_vae", "sarnet"])
def test_ddp_evaluates_as_one_process(model, smoke_run, tmp_path):
    """The same weights (a smoke run's, trained on at lr 1e-30) evaluated by 2 gloo processes and by one: the test
    and validation metrics are over the whole splits (synced, every image once, the VAE's noise drawn per image),
    FID and kNN are rank 0's, so all equal the one process's."""
    ckpt = smoke_run(model) / "checkpoints" / "last.ckpt"
    common = [f"model={model}", "latent_dim=8", f"init_ckpt={ckpt}", "model.optimizer.lr=1e-30", "trainer.max_epochs=1",
              "trainer.limit_train_batches=2", "fid.n_gen=200", "fid.n_sets=1", "fid.knn.n=200", "logger=csv"]
    ok(*common, "trainer=cpu", f"hydra.run.dir={tmp_path / 'one'}")
    ok(*common, *DDP, f"hydra.run.dir={tmp_path / 'two'}")
    one, two = results(tmp_path / "one")["metrics"], results(tmp_path / "two")["metrics"]
    for key in ("test/loss", "test/recon", "test/mse", "val/loss", "fid/mean", "knn/accuracy"):
        if key in one:
            assert two[key] == pytest.approx(one[key], rel=1e-6), key
    assert ("test/kld" in one) == (model == "sarnet_vae")


@pytest.mark.slow
@needs_data
def test_joblib_launcher_runs_jobs_in_parallel_with_one_wandb_run_each(tmp_path):
    ok("-m", "latent_dim=8,16", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer=smoke", "fid=off",
       f"hydra.sweep.dir={tmp_path}")
    runs = sorted(p.parent for p in tmp_path.glob("*/results.json"))
    assert [p.name for p in runs] == ["0_fid=off,latent_dim=8", "1_fid=off,latent_dim=16"]
    assert [results(p)["latent_dim"] for p in runs] == [8, 16]
    assert [len(list(p.glob("wandb/offline-run-*"))) for p in runs] == [1, 1]
    # in parallel: each job's [end - wall time, end] overlaps the other's
    ends = [(p / "results.json").stat().st_mtime for p in runs]
    spans = [(end - results(p)["wall_time_s"], end) for p, end in zip(runs, ends)]
    assert spans[0][0] < spans[1][1] and spans[1][0] < spans[0][1], spans


@pytest.mark.slow
@needs_data
def test_submitit_local_launcher(tmp_path):
    out = ok("-m", "latent_dim=8,16", "hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10",
             "trainer=smoke", "fid=off", "logger=csv", f"hydra.sweep.dir={tmp_path}")
    assert "2 jobs ok, 0 failed" in out
    assert [results(p.parent)["status"] for p in sorted(tmp_path.glob("*/results.json"))] == ["ok", "ok"]
    assert len(list(tmp_path.glob(".submitit/*/*_log.out"))) == 2  # submitit's own logs, one per job


MULTI_NODE = ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.nodes=2",
              "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4"]  # docs/scale-out.md's example


@pytest.mark.parametrize("extra, options", [
    ([], ["--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1"]),
    (MULTI_NODE, ["--gpus-per-node=4", "--ntasks-per-node=4", "--nodes=2"])], ids=["one_gpu", "ddp_2x4"])
def test_slurm_launcher_config_composes_into_an_sbatch_script(tmp_path, monkeypatch, extra, options):
    """conf/hydra/launcher/slurm.yaml as submitit would turn it into sbatch options, without submitting; with
    trainer=ddp on 2 nodes x 4 GPUs: one task per GPU (srun starts the 8 ranks), which the trainer expects."""
    import submitit
    from hydra.utils import instantiate
    from omegaconf import OmegaConf
    from submitit.slurm.slurm import _make_sbatch_string

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    fake_bin = tmp_path / "bin"  # submitit only checks that srun exists; nothing here calls it or sbatch
    fake_bin.mkdir()
    (fake_bin / "srun").write_text("#!/bin/sh\nexit 1\n")
    (fake_bin / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake_bin}{os.pathsep}{os.environ['PATH']}")
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=["hydra/launcher=slurm", "hydra.launcher.partition=gpu",
                                           f"hydra.sweep.dir={tmp_path}/sweep", *extra], return_hydra_config=True)
    launch = cfg.hydra.launcher
    assert launch.tasks_per_node * launch.nodes == cfg.trainer.devices * (cfg.trainer.num_nodes or 1)
    launcher = instantiate(cfg.hydra.launcher)
    assert type(launcher).__name__ == "SlurmLauncher"
    params = dict(launcher.params)  # what SlurmLauncher.launch hands to submitit, the same way
    executor = submitit.AutoExecutor(cluster="slurm", folder=params.pop("submitit_folder"),
                                     slurm_max_num_timeout=params.pop("max_num_timeout"))
    base = set(OmegaConf.structured(BaseQueueConf).keys())
    executor.update_parameters(**{k if k in base else f"slurm_{k}": v for k, v in params.items()})
    script = _make_sbatch_string(command="python -u -m submitit.core._submit x", folder=str(tmp_path),
                                 **executor._executor.parameters)
    for option in [*options, "--cpus-per-task=8", "--mem=32GB", "--time=240", "--partition=gpu", "--signal=USR2@120"]:
        assert f"#SBATCH {option}\n" in script
    assert executor._executor.max_num_timeout == 3


# ---- 6. damaged checkpoints, datasets and classifier caches --------------------------------------------------

def small_checkpoint(path):
    """A sarnet checkpoint as read_checkpoint expects it, with one large, recognisable tensor."""
    w = torch.arange(20000, dtype=torch.float32)
    torch.save({"sarnet": {"net": {"_target_": "sarnet.nn.SarNet"}, "format": 1}, "state_dict": {"net.w": w},
                "epoch": 0, "global_step": 3}, path)
    return w


def damage(path, how, w=None):
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[len(data) // 2:]
    else:  # one flipped bit inside a tensor: same size, still a valid zip and pickle
        data[data.find(w[1000:1001].numpy().tobytes())] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("how", ["truncated", "bitflip"])
def test_check_checkpoint_refuses_damaged_files(tmp_path, how):
    path = tmp_path / "x.ckpt"
    damage(path, how, small_checkpoint(path))
    expected = "CRC mismatch in x/data/0" if how == "bitflip" else "truncated or corrupted"
    for read in (lambda: check_checkpoint(path, "a test"), lambda: load_model(path)):
        with pytest.raises(CheckpointError, match=f"{path}: cannot be read as a checkpoint .*{expected}"):
            read()


@needs_data
@pytest.mark.parametrize("how, where", [("truncated", "ckpt_path"), ("bitflip", "ckpt_path"),
                                        ("truncated", "run dir")])
def test_train_py_refuses_a_damaged_checkpoint_before_training(tmp_path, how, where):
    run = tmp_path / "run"
    path = run / "checkpoints" / ("last.ckpt" if where == "run dir" else "given.ckpt")
    path.parent.mkdir(parents=True, exist_ok=True)
    damage(path, how, small_checkpoint(path))
    # ckpt_path: the run dir is the checkpoint's, without hydra.run.dir
    extra = [f"ckpt_path={path}"] if where == "ckpt_path" else [f"hydra.run.dir={run}"]
    rc, out = train_inprocess(*extra, "trainer=smoke", "logger=csv")
    assert rc != 0
    message = error_line(out, "sarnet.checkpoint.CheckpointError")
    assert message.startswith(f"{path}: cannot be read as a checkpoint (truncated or corrupted?)"), message
    assert ("delete it to start afresh" if where == "run dir" else f"given as ckpt_path={path}") in message
    assert "direct cause" not in out and "During handling" not in out  # no unpickling traceback


@needs_data
def test_init_ckpt_starts_a_new_run_from_the_checkpoints_weights(tmp_path):
    """A fine-tune / warm restart: the weights come from init_ckpt, the epoch count and optimizer start afresh."""
    base = ["trainer=smoke", "fid=off", "logger=csv", "latent_dim=8"]
    first = tmp_path / "first" / "checkpoints" / "last.ckpt"
    assert train_inprocess(*base, f"hydra.run.dir={first.parents[1]}")[0] == 0
    # lr 1e-30: Adam's steps (about lr each) leave every weight where init_ckpt put it, to float32 precision
    rc, out = train_inprocess(*base, f"init_ckpt={first}", "model.optimizer.lr=1e-30",
                              f"hydra.run.dir={tmp_path / 'second'}")
    assert rc == 0, out[-3000:]

    def weights(path):
        return torch.cat([v.flatten() for k, v in read_checkpoint(path)["state_dict"].items() if "mask" not in k])

    trained, started = weights(first), torch.cat([v.detach().flatten() for k, v in
                                                  validate(compose_config(*base)).state_dict().items()
                                                  if "mask" not in k])
    assert not torch.allclose(trained, started)  # the first run moved the weights away from the seed's
    assert torch.allclose(weights(tmp_path / "second" / "checkpoints" / "last.ckpt"), trained, rtol=0, atol=1e-20)
    got = results(tmp_path / "second")
    assert got["init_ckpt"] == str(first) and got["epochs"] == 1 and got["steps"] == 3  # counted afresh


def test_the_net_train_py_trains_starts_from_its_seeds_weights():
    """validate() builds the net that train.py trains: the same seed gives the same initial weights whatever the
    global RNG held before, another seed other weights, and the global RNG is left alone (a net built before any
    seeding once drew them from torch's start-up state, random per process: no seed reproduced its run)."""
    def weights(seed):
        return torch.cat([p.detach().flatten() for p in validate(compose_config(f"seed={seed}", "latent_dim=8"))
                          .parameters()])

    torch.manual_seed(0)
    first = weights(1234)
    state = torch.random.get_rng_state()
    again = weights(1234)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert torch.equal(first, again) and not torch.equal(first, weights(1235))
