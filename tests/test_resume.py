"""Resume and checkpoints you can trust: one writer per run dir, a resume continuing in its own dir, config drift
refused, RNG streams in the checkpoint, atomic and finite checkpoint writes, damaged files refused,
SIGTERM and SIGKILL, and a killed-and-resumed run bit-identical to an uninterrupted one (slow: more than a smoke run).
"""

import argparse
import errno
import json
import os
import random
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from sarnet.checkpoint import CheckpointError, load_model, read_checkpoint, stored_run
from sarnet.config import ConfigError, validate
from sarnet.resume import (
    AtomicCheckpointIO,
    NonFiniteWeightsError,
    ResumeState,
    RunCheckpoint,
    check_drift,
    continue_csv,
    run_config,
)
from sarnet.rundir import RunDirBusy, RunDirError, check_writable, lock_run_dir, running_jobs, unlock_run_dir
from sarnet.train import resolve_ckpt
from tests.conftest import (
    ENV,
    QUICK,
    RESUMABLE,
    ROOT,
    assert_same_run,
    compose_config,
    csv_rows,
    error_line,
    needs_data,
    offline_runs,
    ok,
    python,
    read_run,
    results,
    train,
    train_inprocess,
)

# ---- one writer per run dir ----------------------------------------------------------------------------------

HOLD = ("import sys, time; from sarnet.rundir import lock_run_dir; lock_run_dir(sys.argv[1]); "
        "print('ok', flush=True); time.sleep(120)")


@needs_data
def test_a_live_lock_is_refused_also_by_train_py_and_a_dead_one_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout.readline().strip() == "ok"
        with pytest.raises(RunDirBusy, match=f"{run} is in use by another train.py \\(pid {proc.pid},"):
            lock_run_dir(run)
        rc, out = train("trainer=smoke", "logger=csv", f"hydra.run.dir={run}", timeout=120)
        assert rc == 2 and "Traceback" not in out and not (run / "train.log").exists()  # the owner's log untouched
        assert f"is in use by another train.py (pid {proc.pid}" in error_line(out, "sarnet.rundir.RunDirBusy")
    finally:
        proc.kill()  # SIGKILL: no clean-up ran, the pid is still in the file
        proc.wait()
    lock = lock_run_dir(run)
    assert f"taking over the lock of pid {proc.pid}" in caplog.text
    assert running_jobs(tmp_path) == {run / ".lock": os.getpid()}
    unlock_run_dir(lock)
    assert running_jobs(tmp_path) == {}  # a run dir that ended has no owner


# ---- a resume continues its run in its own dir ---------------------------------------------------------------

def test_ckpt_path_continues_the_run_in_its_own_dir(tmp_path):
    def run_dir(*overrides) -> str:
        return compose_config(*overrides, hydra=True).hydra.run.dir

    run = tmp_path / "outputs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({}, run / "checkpoints" / "last.ckpt")
    # the run dir, whatever dir the launch would make: given as the run dir or as one of its checkpoints
    assert run_dir(f"ckpt_path={run}") == run_dir(f"ckpt_path={run}/checkpoints/last.ckpt") == str(run)
    # a launch train.py refuses gets a new dir, so that the refusal writes nothing into the run
    for refused in ([f"ckpt_path={run}", "init_ckpt=x.ckpt"], [f"ckpt_path={tmp_path}/none"], []):
        assert run_dir(*refused).startswith("outputs/")
    with pytest.raises(ConfigError, match=f"continues the run in {run}, not in {tmp_path}: drop hydra.run.dir"):
        resolve_ckpt(compose_config(f"ckpt_path={run}"), tmp_path)


@pytest.mark.parametrize("argv, command", [
    (["train.py", "model=vae", "--latent_dim=16", "hydra.run.dir=x", "init_ckpt=a.ckpt"],
     "python train.py model=vae latent_dim=16 ckpt_path=/runs/r"),
    (["/venv/bin/sarnet", "train", "ckpt_path=old", "seed=1"], "sarnet train seed=1 ckpt_path=/runs/r"),
    (["/src/sarnet/__main__.py", "train", "data=mnist"], "python -m sarnet train data=mnist ckpt_path=/runs/r")])
def test_the_resume_command_is_the_launch_continuing_its_run(argv, command, monkeypatch, tmp_path):
    from sarnet.rundir import relaunch_command

    monkeypatch.chdir(tmp_path)  # this interpreter lies outside it: `python`
    monkeypatch.setattr(sys, "argv", argv)
    assert relaunch_command(run_dir="/runs/r") == command
    monkeypatch.setattr(sys, "argv", ["train.py", "-m", "latent_dim=8,16", "hydra.sweep.dir=old", "init_ckpt=a"])
    assert relaunch_command(sweep_dir="/sweeps/lr=0.1") == "python train.py -m latent_dim=8,16 init_ckpt=a " \
                                                           "'hydra.sweep.dir=\"/sweeps/lr=0.1\"'"  # Hydra's quotes
    monkeypatch.chdir(Path(sys.executable).parents[2])  # inside it, as make's .venv/bin/python: its path
    assert relaunch_command(sweep_dir="s").startswith(f"{Path(*Path(sys.executable).parts[-3:])} train.py -m")


def test_checkpoint_paths_follow_a_moved_run_dir():
    old, new = Path("/a/checkpoints"), Path("/b/checkpoints")
    state = {"monitor": "val/loss", "best_model_score": torch.tensor(1.0), "best_model_path": str(old / "best.ckpt"),
             "kth_best_model_path": str(old / "best.ckpt"), "kth_value": torch.tensor(1.0),
             "best_k_models": {str(old / "best.ckpt"): torch.tensor(1.0)}, "last_model_path": "",
             "dirpath": str(old)}
    callback = RunCheckpoint(dirpath=new, filename="best", monitor="val/loss")
    callback.load_state_dict(state)
    assert callback.best_model_path == str(new / "best.ckpt")
    assert list(callback.best_k_models) == [str(new / "best.ckpt")] and callback.best_model_score == 1.0


# ---- config drift on resume ----------------------------------------------------------------------------------

def fake_ckpt(cfg) -> dict:
    """What check_drift reads from a checkpoint written by a run with config `cfg`, after its first epoch."""
    return {"epoch": 0, "sarnet": {"net": OmegaConf.to_container(cfg.model.net, resolve=True), "format": 1},
            "sarnet_run": {"config": json.dumps(run_config(cfg)), "metrics": {}, "rng": {}}}


@pytest.mark.parametrize("change, fields", [
    (["model.net.first_patch=predicted"], ["model.net.first_patch: 'given' -> 'predicted'"]),
    (["latent_dim=16"], ["latent_dim: 8 -> 16", "model.net.latent_dim: 8 -> 16"]),
    (["model=vae"], ["model.net._target_: 'sarnet.nn.SarNetVAE' -> 'sarnet.nn.ConvVAE'"]),
    (["data.classes=[3]"], ["data.classes: [5] -> [3]"]),
    (["scheduler=plateau"], ["model.scheduler._target_: None -> 'torch.optim.lr_scheduler.ReduceLROnPlateau'"]),
    (["model.optimizer.lr=5e-4"], ["model.optimizer.lr: 0.001 -> 0.0005", "resume_override_optimizer=true"]),
    (["model.optimizer.lr=5e-4", "resume_override_optimizer=true", "model.optimizer._target_=torch.optim.SGD"],
     ["model.optimizer._target_"]),
    (["loss=mse"], ["loss.kind"]),  # model.loss is ${loss}: named once, as `loss`
])
def test_resume_refuses_config_drift_naming_the_fields(change, fields):
    ckpt = fake_ckpt(compose_config("latent_dim=8"))
    with pytest.raises(ConfigError) as e:
        check_drift(compose_config("latent_dim=8", *change), ckpt, "x/last.ckpt")
    message = str(e.value)
    assert message.startswith("resume refused: the config differs from the one x/last.ckpt was trained with")
    assert "\n" not in message and all(f in message for f in fields) and "model.loss" not in message, message
    assert ("init_ckpt=" in message) != any(f.startswith("model.net") for f in fields)  # init_ckpt needs the same net


def test_resume_allows_what_does_not_change_the_model_or_data_and_applies_an_explicit_optimizer_override(caplog):
    ckpt = fake_ckpt(compose_config("latent_dim=8"))
    with pytest.raises(ConfigError, match="^resume refused: x lacks the RNG state of an exact resume"):
        check_drift(compose_config("latent_dim=8"), {"sarnet_run": {"config": ckpt["sarnet_run"]["config"]}}, "x")
    assert check_drift(compose_config("latent_dim=8", "trainer.max_epochs=300", "data.num_workers=2",
                                      "data_dir=elsewhere", "fid=off", "logger=csv"), ckpt, "x") == {}
    override = check_drift(compose_config("latent_dim=8", "model.optimizer.lr=5e-4", "resume_override_optimizer=true"),
                           ckpt, "x")
    assert override == {"model.optimizer.lr": (0.001, 0.0005)}
    assert "resume_override_optimizer=true: model.optimizer.lr 0.001 -> 0.0005" in caplog.text
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)  # as restored from the checkpoint
    ResumeState(optimizer_override=override).on_train_start(argparse.Namespace(optimizers=[opt]), None)
    assert opt.param_groups[0]["lr"] == 5e-4


# ---- RNG streams and the CSV in the checkpoint (the data order: test_data.py) -----------------------------------

def test_rng_state_and_wall_time_survive_a_checkpoint_and_the_rng_wins_over_a_reseed(tmp_path):
    torch.manual_seed(1), np.random.seed(2), random.seed(3)
    first, checkpoint = ResumeState(), {}
    first.started -= 100  # this launch has run 100 s when it saves
    first.on_save_checkpoint(argparse.Namespace(loggers=[], callback_metrics={}, current_epoch=0, global_step=1), None,
                             checkpoint)
    expected = (torch.rand(3), np.random.rand(3), random.random())
    torch.save(checkpoint, tmp_path / "c.ckpt")
    earlier = stored_run(torch.load(tmp_path / "c.ckpt", weights_only=True))  # as train.py reads it back
    torch.manual_seed(99), np.random.seed(99), random.seed(99)  # seed_everything on the relaunch
    relaunch = ResumeState(earlier=earlier)
    relaunch.on_train_start(argparse.Namespace(optimizers=[], lr_scheduler_configs=[]), None)
    got = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(got[0], expected[0]) and np.array_equal(got[1], expected[1]) and got[2] == expected[2]
    assert relaunch.earlier_s == earlier["wall_time_s"] >= 100  # results.json's wall_time_s counts every launch


@pytest.mark.filterwarnings("ignore:Experiment logs directory")  # the deletion we undo
@pytest.mark.parametrize("killed", ["mid-epoch", "before the train row"])
def test_resume_puts_back_the_csv_rows_up_to_the_checkpoint(tmp_path, killed):
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


# ---- checkpoint writes: atomic, finite; faults of the disk ---------------------------------------------------

@pytest.mark.parametrize("fault", ["killed", "disk full", "non-finite weights"])
def test_a_failed_checkpoint_write_keeps_the_old_file_and_leaves_no_part(tmp_path, monkeypatch, fault):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"  # the folder made too
    io.save_checkpoint({"state_dict": {"net.w": torch.ones(3)}, "epoch": 0, "global_step": 3}, path)
    before, new = path.read_bytes(), {"state_dict": {"net.w": torch.zeros(3)}, "epoch": 1, "global_step": 6}

    def fails(fd):  # the new bytes are in the temp file: then the process is gone, or the disk full
        raise KeyboardInterrupt if fault == "killed" else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    if fault == "non-finite weights":
        new["state_dict"]["net.w"] = torch.tensor([1.0, float("inf"), 0])
        refused = pytest.raises(NonFiniteWeightsError, match=r"epoch 1, step 6 \(net.w\).*last good checkpoint is kept")
    else:
        monkeypatch.setattr(os, "fsync", fails)
        refused = pytest.raises(KeyboardInterrupt) if fault == "killed" else pytest.raises(
            RunDirError, match=f"{path}: cannot write the checkpoint \\(No space left on device\\)")
    with refused:
        io.save_checkpoint(new, path)
    assert path.read_bytes() == before and [p.name for p in path.parent.iterdir()] == ["last.ckpt"]
    monkeypatch.undo()
    (path.parent / ".last.ckpt.12345.part").write_bytes(before[:10])  # SIGKILL mid-write: no cleanup ran
    io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, path)
    assert [p.name for p in path.parent.iterdir()] == ["last.ckpt"] and torch.load(path)["epoch"] == 1


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs (root only): a real full disk, then remounted read-only."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)],
                                           capture_output=True).returncode:
        pytest.skip("needs root to mount a tmpfs")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_real_full_and_read_only_disks(tmpfs):
    io = AtomicCheckpointIO()
    with pytest.raises(RunDirError, match="cannot write the checkpoint \\(No space left on device\\)"):
        io.save_checkpoint({"state_dict": {"w": torch.ones(1 << 19)}, "epoch": 0}, tmpfs / "last.ckpt")
    assert list(tmpfs.iterdir()) == []  # nothing half-written
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    for check in (check_writable, lock_run_dir):
        with pytest.raises(RunDirError, match=f"{tmpfs}: cannot write \\(Read-only file system\\)"):
            check(tmpfs)
    # train.py: one line, before Hydra writes anything
    rc, out = train("data_dir=/nonexistent", f"hydra.run.dir={tmpfs}/run", timeout=120)
    assert rc == 1 and "Traceback" not in out
    assert error_line(out, "sarnet.rundir.RunDirError") == (f"{tmpfs}/run: cannot write (Read-only file system); free "
                                                             f"space or pick a writable hydra.run.dir")


# ---- damaged checkpoints -------------------------------------------------------------------------------------

def damaged_checkpoint(path, how):
    """A sarnet checkpoint as read_checkpoint expects it, truncated or with one bit flipped inside its large tensor
    (same size, still a valid zip and pickle)."""
    w = torch.arange(20000, dtype=torch.float32)
    torch.save({"sarnet": {"net": {"_target_": "sarnet.nn.SarNet"}, "format": 1}, "state_dict": {"net.w": w},
                "epoch": 0, "global_step": 3}, path)
    data = bytearray(path.read_bytes())
    if how == "truncated":
        del data[len(data) // 2:]
    else:
        data[data.find(w[1000:1001].numpy().tobytes())] ^= 0x10
    path.write_bytes(bytes(data))


@needs_data
@pytest.mark.parametrize("how, where", [("truncated", "ckpt_path"), ("bitflip", "ckpt_path"),
                                        ("truncated", "run dir")])
def test_a_damaged_checkpoint_is_refused_by_its_readers_and_by_train_py_before_training(tmp_path, how, where):
    run = tmp_path / "run"
    path = run / "checkpoints" / ("last.ckpt" if where == "run dir" else "given.ckpt")
    path.parent.mkdir(parents=True)
    damaged_checkpoint(path, how)
    expected = f"CRC mismatch in {path.stem}/data/0" if how == "bitflip" else "truncated or corrupted"
    for read in (lambda: read_checkpoint(path, why="a test"), lambda: load_model(path)):
        with pytest.raises(CheckpointError, match=f"{path}: cannot be read as a checkpoint .*{expected}"):
            read()
    # ckpt_path: the run dir is the checkpoint's, without hydra.run.dir
    extra = [f"ckpt_path={path}"] if where == "ckpt_path" else [f"hydra.run.dir={run}"]
    rc, out = train_inprocess(*extra, "trainer=smoke", "logger=csv")
    message = error_line(out, "sarnet.checkpoint.CheckpointError")
    assert rc == 2 and message.startswith(f"{path}: cannot be read as a checkpoint (truncated or corrupted?)"), message
    assert ("delete it to start afresh" if where == "run dir" else f"given as ckpt_path={path}") in message
    assert "direct cause" not in out and "During handling" not in out  # no unpickling traceback


@pytest.mark.slow
@needs_data
def test_a_damaged_best_checkpoint_is_refused_before_test(tmp_path):
    rc, out = train(*QUICK, "eval_ckpt=best", f"hydra.run.dir={tmp_path}",
                    "+callbacks.fault._target_=tests.faults.DamageBest")
    assert rc == 1 and "Traceback" not in out
    message = error_line(out, "sarnet.checkpoint.CheckpointError")
    assert message.startswith(f"{tmp_path / 'checkpoints' / 'best.ckpt'}: cannot be read as a checkpoint"), message
    assert not (tmp_path / "results.json").exists()


# ---- new runs from a checkpoint, relaunched runs ---------------------------------------------------------------

@needs_data
def test_init_ckpt_starts_a_new_run_from_the_checkpoints_weights(smoke_run, tmp_path):
    """A fine-tune: the weights come from init_ckpt, the epoch count and optimizer start afresh."""
    first = smoke_run("sarnet_vae") / "checkpoints" / "last.ckpt"  # QUICK's net, trained
    # lr 1e-30: Adam's steps (about lr each) leave every weight where init_ckpt put it, to float32 precision
    train_inprocess(*QUICK, f"init_ckpt={first.parents[1]}", "model.optimizer.lr=1e-30",  # its run dir: its last.ckpt
                    f"hydra.run.dir={tmp_path / 'second'}", check=True)

    def weights(state_dict):
        return torch.cat([v.detach().flatten() for k, v in state_dict.items() if "mask" not in k])

    trained, started = weights(read_checkpoint(first)["state_dict"]), weights(validate(compose_config(*QUICK))
                                                                               .state_dict())
    assert not torch.allclose(trained, started)  # the first run moved the weights away from the seed's
    second = weights(read_checkpoint(tmp_path / "second" / "checkpoints" / "last.ckpt")["state_dict"])
    assert torch.allclose(second, trained, rtol=0, atol=1e-20)
    got = results(tmp_path / "second")
    assert got["init_ckpt"] == str(first.parents[1]) and got["epochs"] == 1 and got["steps"] == 3  # counted afresh
    _, out = train_inprocess(*QUICK, "model.optimizer.lr=1e-30", f"ckpt_path={tmp_path / 'second'}", check=True)
    assert "nothing to do" in out  # resumed by ckpt_path, which comes without init_ckpt: the same finished run


@pytest.mark.slow
@needs_data
def test_a_relaunched_run_dir_refuses_drift_resumes_moved_and_skips_when_finished(tmp_path):
    """Relaunched into a copy of its run dir (the original gone): drift refused, more epochs resume on the copy's files
    and its W&B run, the same config skipped (a relaunched sweep must not score finished jobs again), a new evaluation
    setting evaluated again, an optimizer override applied and said."""
    logged = [o for o in QUICK if o != "logger=csv"]  # with W&B (offline)
    ok(*logged, f"hydra.run.dir={tmp_path / 'a'}")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")
    run, last = [*logged, f"hydra.run.dir={tmp_path / 'b'}"], tmp_path / "b" / "checkpoints" / "last.ckpt"
    digest = last.read_bytes()
    rc, out = train(*run, "trainer.max_epochs=2", "model.net.first_patch=predicted", timeout=300)
    assert rc == 2 and "Traceback" not in out
    assert "model.net.first_patch: 'given' -> 'predicted'" in error_line(out, "sarnet.fields.ConfigError")
    assert last.read_bytes() == digest
    ok(*run, "trainer.max_epochs=2")
    assert sorted(p.name for p in last.parent.iterdir()) == ["best.ckpt", "last.ckpt"]
    runs = [read_run(d) for d in offline_runs(tmp_path / "b")]
    assert len(runs) == 2 and runs[0]["id"] == runs[1]["id"]  # `wandb sync` of both uploads one run
    assert runs[1]["config"]["resumed"] is True
    first, written = results(tmp_path / "b"), (tmp_path / "b" / "results.json").read_bytes()
    assert first["epochs"] == 2 and first["status"] == "ok" and first["config_sha256"]
    assert "finished earlier with this same config: nothing to do" in ok(*run, "trainer.max_epochs=2")
    assert (tmp_path / "b" / "results.json").read_bytes() == written
    shutil.copytree(tmp_path / "b", tmp_path / "ç")  # a copy of the finished run is the same run (any path)
    assert "nothing to do" in ok(*logged, f'hydra.run.dir="{tmp_path / "ç"}"', "trainer.max_epochs=2")
    out = ok(*run, "trainer.max_epochs=2", "sample.z_scale=0.9")  # nothing to train: the same metrics again
    again = results(tmp_path / "b")
    assert "nothing to do" not in out and "done: " in out and again["config_sha256"] != first["config_sha256"]
    assert again["metrics"] == first["metrics"] and again["steps"] == first["steps"]
    out = ok(*run, "trainer.max_epochs=3", "model.optimizer.lr=5e-4", "resume_override_optimizer=true")
    assert "model.optimizer.lr 0.001 -> 0.0005" in out
    rc, out = train(*run, "trainer.max_epochs=2", timeout=300)  # fewer epochs than it trained: one line
    assert rc == 2 and "trainer.max_epochs=2 is invalid: " in error_line(out, "sarnet.fields.ConfigError")


# ---- SIGTERM and SIGKILL -------------------------------------------------------------------------------------

def stop_after_checkpoint(log, watch, epoch, delay, sig, *args, cwd=ROOT) -> str:
    """Start train.py RESUMABLE + args in cwd; send `sig` `delay` s after a checkpoints/last.ckpt under `watch`
    first holds `epoch` (written by rename: never read half-written); -> its output."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *RESUMABLE, *args], cwd=cwd, env=ENV,
                                stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None and not any(torch.load(p, weights_only=True, mmap=True)["epoch"] >= epoch
                                                  for p in watch.glob("**/checkpoints/last.ckpt")):
                time.sleep(0.005)
            time.sleep(delay)
            assert proc.poll() is None, f"train.py ended before it could be stopped:\n{log.read_text()[-3000:]}"
            proc.send_signal(sig)
            assert proc.wait(timeout=300) == (128 + sig if sig == signal.SIGTERM else -sig)
        finally:
            proc.kill()
            proc.wait()
    return log.read_text()


@pytest.mark.slow
@needs_data
def test_killed_or_stopped_runs_resumed_end_bit_identical_to_an_uninterrupted_run(tmp_path):
    ok(*RESUMABLE, f"hydra.run.dir={tmp_path / 'ref'}")
    run = tmp_path / "run"
    # Killed right after epoch 0's checkpoint: Lightning logs that epoch's train row only after it, so the row is
    # not in metrics.csv yet (it is in the checkpoint). Then killed mid-epoch, and after a checkpoint again.
    for epoch, delay in ((0, 0.0), (1, 0.3), (2, 0.0)):  # re-run into the same dir: resumes by itself
        out = stop_after_checkpoint(tmp_path / f"{epoch}.log", run, epoch, delay, signal.SIGKILL,
                                    f"hydra.run.dir={run}")
        assert epoch == 0 or f"Restoring states from the checkpoint path at {run}/checkpoints/last.ckpt" in out
    out = ok(*RESUMABLE, f"ckpt_path={run}")  # ckpt_path=<run dir>: continued there, not in a new dir
    assert f"Restoring states from the checkpoint path at {run}/checkpoints/last.ckpt" in out
    assert_same_run(tmp_path / "ref", run)
    ref, got = results(tmp_path / "ref"), results(run)
    assert (got["epochs"], got["steps"]) == (4, 80)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 80
    assert (got["eval_epoch"], got["eval_score"]) == (ref["eval_epoch"], ref["eval_score"])  # the same weights tested
    rows = csv_rows(run)  # each logged once: none lost with the killed runs, none twice by the reruns
    logged = {k: sorted(int(r["epoch"]) for r in rows if r.get(k)) for k in ("val/loss", "train/loss", "test/loss")}
    assert logged == {"val/loss": [0, 1, 2, 3], "train/loss": [0, 1, 2, 3], "test/loss": [4]}

    # SIGTERM mid-epoch to a launch as a user makes it (a new timestamped dir), relaunched with the command it prints
    work = tmp_path / "work"
    work.mkdir()
    out = stop_after_checkpoint(tmp_path / "stopped.log", work, 1, 0.3, signal.SIGTERM, f"data_dir={ROOT / 'data'}",
                                cwd=work)
    (stopped,) = work.glob("outputs/*/*")
    message = error_line(out, "sarnet.rundir.RunDirError")
    command = shlex.split(message.split("to resume: ", 1)[1])
    assert command[0] == "python" and command[-1] == f"ckpt_path={stopped}", message
    python(*command[1:], cwd=work, check=True)
    assert list(work.glob("outputs/*/*")) == [stopped] and (stopped / ".lock").read_text() == ""  # its dir, released
    assert_same_run(tmp_path / "ref", stopped)
