"""Sweeps and scale-out (docs/scale-out.md): a failing job, SIGTERM to a sweep, optuna, the joblib, submitit and SLURM
launchers, DDP on two CPU processes; the real train.py as a subprocess, slow if it trains more than two smoke jobs."""

import shlex
import signal
from pathlib import Path

import pytest
from omegaconf import OmegaConf

from sarnet.checkpoint import read_checkpoint
from tests.conftest import ENV, compose_config, error_line, needs_data, offline_runs, ok, read_run, results, train

DDP = ["trainer=ddp", "trainer.accelerator=cpu", "trainer.devices=2"]  # two gloo processes on the CPU


# ---- sweeps ----------------------------------------------------------------------------------------------------

@needs_data
def test_a_sweep_yields_one_result_and_wandb_run_per_job_and_reports_the_failed_one(tmp_path):
    key = "callbacks.images.keep_patches"  # job 0 passes the fields check before the sweep; its own set-up refuses it
    args = ["-m", f"{key}=100,0,1", "trainer=smoke", "fid=off", f"hydra.sweep.dir={tmp_path}",
            "data_dir=${hydra:runtime.cwd}/data"]  # resolved in each job, as Hydra resolves it there
    jobs = lambda: [results(tmp_path / f"{i}_{key}={k},fid=off") for i, k in enumerate((100, 0, 1))]  # noqa: E731
    rc, out = train(*args)
    failed, *good = jobs()
    assert failed["status"] == "failed" and failed["error"].startswith(f"ConfigError: {key}=100 is invalid")
    assert [(r["status"], r["steps"]) for r in good] == [("ok", 3), ("ok", 3)] and "Callback" not in out
    assert rc == 1 and "jobs: 2 ok, 1 failed" in out and f"failed: 0_{key}=100,fid=off: ConfigError" in out
    assert len(list(tmp_path.glob("*/wandb/offline-run-*"))) == 2  # one W&B run per job that ran
    train(*args[:2], "trainer=default", *args[3:], env=ENV | {"RANK": "1"})  # as an srun DDP rank > 0 would be:
    assert jobs()[1:] == good  # refused too, and rank 0's to record
    rc, out = train(*args[:2], "trainer=default", *args[3:])  # the finished jobs refuse the changed trainer:
    _, *again = jobs()  # their results stay, the refusal beside them, and the sweep fails
    assert rc == 1 and "jobs: 0 ok, 3 failed" in out and [r.pop("refused")[:13] for r in again] == ["ConfigError: "] * 2
    assert again == good and "trainer.limit_train_batches: 3 -> None" in out
    assert "jobs: 2 ok, 1 failed" in train(*args)[1] and jobs()[1:] == good  # their own config again: no refusal


@needs_data
@pytest.mark.parametrize("sweep, sig", [(False, signal.SIGTERM), (True, signal.SIGTERM), (False, signal.SIGINT)],
                         ids=["run", "sweep", "ctrl-c"])
def test_sigterm_stops_a_run_or_the_whole_sweep_in_one_line(sweep, sig, tmp_path):
    """A scheduler's SIGTERM (preemption, scancel) or Ctrl-C, before or after a checkpoint: a run writes no
    results.json and says how to go on; a sweep records its job as stopped and starts no further job."""
    where = ["-m", "latent_dim=8,16", f"hydra.sweep.dir={tmp_path}"] if sweep else [f"hydra.run.dir={tmp_path}"]
    fault, ctrl_c = "+callbacks.fault", sig == signal.SIGINT  # Ctrl-C after a checkpoint, SIGTERM before one
    rc, out = train(*where, "trainer=smoke", "trainer.max_epochs=2", "fid=off", "logger=csv", f"{fault}.sig={sig:d}",
                    f"{fault}.epoch={ctrl_c:d}", f"{fault}._target_=tests.faults.SigtermAtEpoch")
    assert rc == 128 + sig and "Traceback" not in out
    assert (line := error_line(out, "RunDirError")).startswith(f"stopped by {sig.name} before the run finished"), line
    if not sweep:
        assert line.endswith(f"ckpt_path={tmp_path}") if ctrl_c else "no checkpoint yet); to start again:" in line, line
        assert not (tmp_path / "results.json").exists()
        return
    (job,) = [p for p in tmp_path.iterdir() if p.is_dir()]  # no second job
    assert "latent_dim=8" in job.name and results(job)["status"] == "failed", job
    assert results(job)["error"].startswith("RunDirError: stopped by SIGTERM")


@pytest.mark.slow
@needs_data
def test_sigterm_to_a_sweep_prints_the_command_that_resumes_its_jobs(tmp_path):
    """Stopped in its first job's second epoch; the printed command resumes that job and runs the other one."""
    rc, out = train("-m", "trainer=smoke", "trainer.max_epochs=2", "fid=off", "logger=csv", "latent_dim=8,16",
                    f"hydra.sweep.dir={tmp_path}", "hydra.sweep.subdir=${hydra.job.num}",  # the fault not in it
                    "+callbacks.fault._target_=tests.faults.SigtermAtEpoch", "+callbacks.fault.epoch=1")
    assert rc == 128 + signal.SIGTERM and "Traceback" not in out
    command = shlex.split(error_line(out, "RunDirError").split("to resume the sweep: ", 1)[1])
    assert command[1:3] == ["train.py", "-m"]  # the interpreter it names: test_resume.py
    out = ok(*[a for a in command[2:] if not a.startswith("+callbacks.fault")], timeout=900)
    assert f"Restoring states from the checkpoint path at {tmp_path}/0/checkpoints/last.ckpt" in out
    assert [(r["status"], r["epochs"]) for r in (results(tmp_path / job) for job in "01")] == [("ok", 2)] * 2
    assert all(p.read_text() == "" for p in tmp_path.glob("*/.lock"))  # released


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"  # a zombie has stopped too
    except (FileNotFoundError, IndexError):
        return True


@pytest.mark.slow
@needs_data
def test_sigterm_to_a_joblib_sweep_stops_its_workers(tmp_path):
    """The parent passes the signal on (orphaned workers would train on): each records its job as stopped and ends."""
    rc, out = train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer=smoke",
                    "trainer.max_epochs=1000", "fid=off", "logger=csv", "latent_dim=8,16,32",
                    f"hydra.sweep.dir={tmp_path}", "+callbacks.fault.workers=2",
                    "+callbacks.fault._target_=tests.faults.SigtermParentWhenAllTrain")
    assert rc == 128 + signal.SIGTERM and "stopping 2 worker process(es)" in out, out[-3000:]
    assert "leaked" not in out  # the workers' semaphores: Python's resource tracker would warn of them in 4 lines
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 2, jobs  # the third job never started
    for job in jobs:
        result = results(job)
        assert result["status"] == "failed" and "stopped by SIGTERM" in result["error"]
        assert gone(int((job / "worker.pid").read_text()))


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
    train(args[0], "trainer=default", *args[2:], timeout=900)  # each finished job refuses the changed trainer:
    assert [results(j)["status"] for j in jobs] == ["ok", "ok"]  # its results stay
    rc, out = train(*args[:-1], f"hydra.sweep.dir={tmp_path / 'bad'}", "optimized_metric=fid/mean", timeout=900)
    assert rc == 1 and "Traceback" not in out and "every trial of the search failed" in out  # fid=off: each fails
    assert len(list((tmp_path / "bad").glob("*/results.json"))) == 2  # the search went on past a failed trial


# ---- launchers: joblib, submitit, SLURM ------------------------------------------------------------------------

@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("launcher", [[], ["hydra/launcher=joblib", "hydra.launcher.n_jobs=2"],
                                      ["hydra/launcher=submitit_local", "hydra.launcher.timeout_min=10"]],
                         ids=["basic", "joblib", "submitit_local"])
def test_local_launchers_run_each_job_with_its_own_wandb_run_and_end_with_the_table(launcher, tmp_path):
    # (joblib's jobs run in parallel: test_sigterm_to_a_joblib_sweep_stops_its_workers waits for two training at once)
    sweep = tmp_path / "multirun" / "smoke"  # the W&B group: the sweep dir's name
    out = ok("-m", "latent_dim=8,16", *launcher, "trainer=smoke", f"hydra.sweep.dir={sweep}")
    runs = sorted(p.parent for p in sweep.glob("*/results.json"))
    assert "jobs: 2 ok, 0 failed" in out
    logs = [(p / "train.log").read_text() for p in runs]  # a job's own log: submitit's jobs print elsewhere
    assert all("FID set 2/2" in log and "done: " in log for log in logs)
    assert [p.name for p in runs] == ["0_latent_dim=8", "1_latent_dim=16"]
    assert [(results(p)["status"], results(p)["latent_dim"]) for p in runs] == [("ok", 8), ("ok", 16)]
    jobs = [read_run(d) for p in runs for d in offline_runs(p)]  # one W&B run per job
    assert [j["name"] for j in jobs] == ["sarnet_vae-L8-s1234", "sarnet_vae-L16-s1234"]
    assert {j["group"] for j in jobs} == {"smoke"}
    for job in jobs:
        assert job["summary"]["fid/mean"] > 0 and "fid/set_2" in job["summary"] and "test/loss" in job["summary"]
    assert "| sarnet_vae | 8 |" in (sweep / "fid_table.md").read_text()
    (table,) = map(read_run, offline_runs(sweep))
    assert table["group"] == "smoke" and {"fid_table", "fid_plot"} <= table["history"]
    if launcher and "submitit" in launcher[0]:
        assert len(list(sweep.glob(".submitit/*/*_log.out"))) == 2  # submitit's own logs, one per job


MULTI_NODE = ["trainer=ddp", "trainer.devices=4", "trainer.num_nodes=2", "hydra.launcher.nodes=2",
              "hydra.launcher.gpus_per_node=4", "hydra.launcher.tasks_per_node=4"]  # docs/scale-out.md's example


@pytest.mark.parametrize("extra, options", [
    ([], ["--gpus-per-node=1", "--ntasks-per-node=1", "--nodes=1"]),
    (MULTI_NODE, ["--gpus-per-node=4", "--ntasks-per-node=4", "--nodes=2"])], ids=["one_gpu", "ddp_2x4"])
def test_slurm_launcher_config_composes_into_an_sbatch_script(tmp_path, monkeypatch, extra, options):
    """conf/hydra/launcher/slurm.yaml as submitit's sbatch options, not submitted; DDP: one task per GPU."""
    import submitit
    from hydra.utils import instantiate
    from submitit.slurm.slurm import SlurmExecutor, _make_sbatch_string

    from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf

    # submitit only checks that srun is on the PATH (its affinity); nothing here calls it or sbatch
    monkeypatch.setattr(SlurmExecutor, "affinity", classmethod(lambda cls: 2))
    cfg = compose_config("hydra/launcher=slurm", "hydra.launcher.partition=gpu", f"hydra.sweep.dir={tmp_path}/sweep",
                         *extra, hydra=True)
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


# ---- DDP on two CPU processes ------------------------------------------------------------------------------------

@pytest.mark.slow
@needs_data
@pytest.mark.parametrize("model", ["sarnet_vae", "sarnet"])
def test_ddp_evaluates_as_one_process(model, smoke_run, tmp_path):
    """The same weights (lr 1e-30) evaluated by 2 gloo processes and by one: metrics over the whole splits (synced,
    every image once, the VAE's noise per image), FID and kNN rank 0's, all equal the one process's. The DDP run,
    with W&B: one results.json, one W&B run, one summary line, no warnings of unsynced metrics."""
    ckpt = smoke_run(model) / "checkpoints" / "last.ckpt"
    # the documented command (debug=smoke) evaluating whole splits; the rest of debug's settings on both sides
    common = [f"model={model}", "latent_dim=8", f"init_ckpt={ckpt}", "model.optimizer.lr=1e-30", "debug=smoke",
              "trainer.limit_train_batches=2", "trainer.limit_val_batches=null", "trainer.limit_test_batches=null",
              "fid.n_sets=1"]
    ok(*common, "trainer=cpu", "logger=csv", f"hydra.run.dir={tmp_path / 'one'}")
    out = ok(*common, *DDP, f"hydra.run.dir={tmp_path / 'two'}")
    one, two = results(tmp_path / "one")["metrics"], results(tmp_path / "two")
    for key in ("test/loss", "test/recon", "test/mse", "val/loss", "fid/mean", "knn/accuracy"):
        if key in one:
            assert two["metrics"][key] == pytest.approx(one[key], rel=1e-6), key
    assert ("test/kld" in one) == (model == "sarnet_vae")
    assert two["status"] == "ok" and (two["epochs"], two["steps"]) == (1, 2)  # 2 steps on each rank
    assert (tmp_path / "two" / "train_ddp_process_1.log").exists()  # rank 1 was a second train.py process
    runs = [p for p in (tmp_path / "two").rglob("results.json") if "wandb" not in p.relative_to(tmp_path).parts]
    assert len(runs) == 1 and len(list((tmp_path / "two").glob("wandb/offline-run-*"))) == 1
    assert {"fid/mean", "knn/accuracy", "test/loss"} <= set(two["metrics"]) and out.count("done: ") == 1
    assert "sync_dist" not in out and "DistributedSampler" not in out
    assert read_checkpoint(tmp_path / "two" / "checkpoints" / "last.ckpt")["global_step"] == 2
