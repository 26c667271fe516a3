"""Resume and checkpoints you can trust; every bad input refused up front (the project's issue 12).

Unit tests run in-process on composed configs, fake checkpoints and fake data; a few run train.py up to the point
where it must refuse (seconds). The ones that train are marked slow. tests/test_bad_inputs.py holds the table of bad
inputs.
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
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from sarnet.checkpoint import stored_run
from sarnet.config import ConfigError
from sarnet.data.sources import DataError
from sarnet.resume import AtomicCheckpointIO, ResumeState, RunCheckpoint, check_drift, run_config
from sarnet.rundir import RunDirBusy, RunDirError, check_writable, lock_run_dir, running_jobs, unlock_run_dir
from tests.conftest import (
    ENV,
    RESUMABLE,
    ROOT,
    assert_same_run,
    csv_rows,
    epochs_with,
    error_line,
    fake_checkpoint,
    fake_idx,
    kill_after_checkpoint,
    needs_data,
    ok,
    results,
    run_script,
    train,
)
from tests.conftest import compose_config as composed


def fake_ckpt(cfg) -> dict:
    """What check_drift reads from a checkpoint written by a run with config `cfg`."""
    return {"sarnet": {"net": OmegaConf.to_container(cfg.model.net, resolve=True), "format": 1},
            "sarnet_run": {"config": json.dumps(run_config(cfg)), "metrics": {}, "rng": {}}}


# ---- 6 and 8: data files ------------------------------------------------------------------------------------

@needs_data
@pytest.mark.parametrize("md5_list", ["make data's", "published"])
def test_a_label_changed_to_another_is_refused_by_the_md5s(tmp_path, md5_list):
    """A test label changed to another valid one (the IDX checks cannot see it): refused by the md5 list `make data`
    wrote, or without that list by the published md5s (the files have the original size)."""
    from sarnet.data import MNISTDataModule

    src, raw = ROOT / "data" / "MNIST" / "raw", tmp_path / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for p in src.iterdir():
        if p.name != ".sarnet-ok.json" or md5_list == "make data's":
            (raw / p.name).symlink_to(p)
    labels = raw / "t10k-labels-idx1-ubyte"
    data = bytearray(labels.read_bytes())
    labels.unlink()
    data[100] = (data[100] + 1) % 10
    labels.write_bytes(bytes(data))
    with pytest.raises(DataError, match=f"{labels}: does not match the md5 "):
        MNISTDataModule(tmp_path).setup()


@pytest.mark.parametrize("garbage", ["{not json", "[1, 2]", '{"x": 3}'])
def test_garbage_md5_list_is_a_data_error_naming_it(tmp_path, garbage):
    from sarnet.data.sources import RAW_FILES, check_raw

    for name in RAW_FILES:
        (tmp_path / name).write_bytes(b"")
    (tmp_path / ".sarnet-ok.json").write_text(garbage)
    with pytest.raises(DataError, match=f"{tmp_path / '.sarnet-ok.json'}: not a.* md5 list"):
        check_raw(tmp_path)


# ---- 2: one writer per run dir -------------------------------------------------------------------------------

HOLD = ("import sys, time; from sarnet.rundir import lock_run_dir; lock_run_dir(sys.argv[1]); "
        "print('ok', flush=True); time.sleep(120)")


def hold_lock(run_dir):
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run_dir)], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                            text=True)
    assert proc.stdout.readline().strip() == "ok"
    return proc


def test_a_live_lock_is_refused_and_a_dead_one_taken_over(tmp_path, caplog):
    run = tmp_path / "run"
    proc = hold_lock(run)
    try:
        with pytest.raises(RunDirBusy, match=f"{run} is in use by another train.py \\(pid {proc.pid},"):
            lock_run_dir(run)
    finally:
        proc.kill()  # SIGKILL: no clean-up ran, the pid is still in the file
        proc.wait()
    lock = lock_run_dir(run)
    assert f"taking over the lock of pid {proc.pid}" in caplog.text
    assert running_jobs(tmp_path) == {run / ".lock": os.getpid()}
    unlock_run_dir(lock)
    assert running_jobs(tmp_path) == {}  # a run dir that ended has no owner


@needs_data
def test_train_py_refuses_a_run_dir_another_process_writes(tmp_path):
    proc = hold_lock(tmp_path)
    try:
        rc, out, _ = train("trainer=smoke", "logger=csv", f"hydra.run.dir={tmp_path}", timeout=120)
    finally:
        proc.kill()
        proc.wait()
    assert rc == 1 and "Traceback" not in out
    assert f"is in use by another train.py (pid {proc.pid}" in error_line(out, "sarnet.rundir.RunDirBusy")


def test_ddp_ranks_above_zero_do_not_lock(tmp_path, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    assert lock_run_dir(tmp_path) is None and not (tmp_path / ".lock").exists()


# ---- 3: resume continues a run in its own dir ---------------------------------------------------------------

def run_dir_composed(*overrides) -> str:
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=True).hydra.run.dir


def test_ckpt_path_continues_the_run_in_its_own_dir(tmp_path):
    from sarnet.config import check_fields
    from sarnet.train import resolve_ckpt

    run = tmp_path / "outputs" / "run"
    (run / "checkpoints").mkdir(parents=True)
    torch.save({}, run / "checkpoints" / "last.ckpt")
    # the run dir, whatever dir the launch would make: given as the run dir or as one of its checkpoints
    assert run_dir_composed(f"ckpt_path={run}") == run_dir_composed(f"ckpt_path={run}/checkpoints/last.ckpt") \
        == str(run)
    # a launch train.py refuses gets a new dir, so that the refusal writes nothing into the run
    for refused in ([f"ckpt_path={run}", "init_ckpt=x.ckpt"], [f"ckpt_path={tmp_path}/none"], []):
        assert run_dir_composed(*refused).startswith("outputs/")
    both = composed(f"ckpt_path={run}", f"init_ckpt={run}/checkpoints/last.ckpt")
    with pytest.raises(ConfigError, match=f"^init_ckpt='{run}/checkpoints/last.ckpt' is invalid: cannot go with "
                                          f"ckpt_path={run}: .*give one of them$"):
        check_fields(both)
    with pytest.raises(ConfigError, match=f"continues the run in {run}, not in {tmp_path}: drop hydra.run.dir"):
        resolve_ckpt(composed(f"ckpt_path={run}"), tmp_path)
    with pytest.raises(ConfigError, match=f"^ckpt_path='{tmp_path}' is invalid: is not a checkpoint file"):
        check_fields(composed(f"ckpt_path={tmp_path}"))


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
    assert relaunch_command(sweep_dir="/sweeps/s") == "python train.py -m latent_dim=8,16 init_ckpt=a " \
                                                      "hydra.sweep.dir=/sweeps/s"
    monkeypatch.chdir(Path(sys.executable).parents[2])  # inside it, as make's .venv/bin/python: its path
    assert relaunch_command(sweep_dir="s").startswith(f"{Path(*Path(sys.executable).parts[-3:])} train.py -m")


# ---- 3: config drift on resume -------------------------------------------------------------------------------

@pytest.mark.parametrize("change, fields", [
    (["model.net.first_patch=predicted"], ["model.net.first_patch: 'given' -> 'predicted'"]),
    (["latent_dim=16"], ["latent_dim: 8 -> 16", "model.net.latent_dim: 8 -> 16"]),
    (["model=vae"], ["model.net._target_: 'sarnet.nn.SarNetVAE' -> 'sarnet.nn.ConvVAE'"]),
    (["data.classes=[3]"], ["data.classes: [5] -> [3]"]),
    (["scheduler=plateau"], ["model.scheduler._target_: None -> 'torch.optim.lr_scheduler.ReduceLROnPlateau'"]),
    (["model.optimizer.lr=5e-4"], ["model.optimizer.lr: 0.001 -> 0.0005", "resume_override_optimizer=true"]),
    (["model.optimizer.lr=5e-4", "resume_override_optimizer=true", "model.optimizer._target_=torch.optim.SGD"],
     ["model.optimizer._target_"]),
])
def test_resume_refuses_config_drift_naming_the_fields(change, fields):
    ckpt = fake_ckpt(composed("latent_dim=8"))
    with pytest.raises(ConfigError) as e:
        check_drift(composed("latent_dim=8", *change), ckpt, "x/last.ckpt")
    message = str(e.value)
    assert message.startswith("resume refused: the config differs from the one x/last.ckpt was trained with")
    assert "\n" not in message and all(f in message for f in fields), message


def test_resume_allows_what_does_not_change_the_model_or_data():
    ckpt = fake_ckpt(composed("latent_dim=8"))
    with pytest.raises(ConfigError, match="^resume refused: x lacks the RNG state of an exact resume"):
        check_drift(composed("latent_dim=8"), {"sarnet_run": {"config": ckpt["sarnet_run"]["config"]}}, "x")
    assert check_drift(composed("latent_dim=8", "trainer.max_epochs=300", "data.num_workers=2", "data_dir=elsewhere",
                                "fid=off", "logger=csv"), ckpt, "x") == {}


def test_a_changed_loss_is_named_once():
    ckpt = fake_ckpt(composed("latent_dim=8"))
    with pytest.raises(ConfigError, match="loss.kind") as refused:  # model.loss is ${loss}: checked as `loss`
        check_drift(composed("latent_dim=8", "loss=mse"), ckpt, "x")
    assert "model.loss" not in str(refused.value)


def test_optimizer_override_is_explicit_logged_and_applied(caplog):
    ckpt = fake_ckpt(composed("latent_dim=8"))
    override = check_drift(composed("latent_dim=8", "model.optimizer.lr=5e-4", "resume_override_optimizer=true"),
                           ckpt, "x")
    assert override == {"model.optimizer.lr": (0.001, 0.0005)}
    assert "resume_override_optimizer=true: model.optimizer.lr 0.001 -> 0.0005" in caplog.text
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(2))], lr=1e-3)  # as restored from the checkpoint
    trainer = argparse.Namespace(optimizers=[opt])
    ResumeState(optimizer_override=override).on_train_start(trainer, None)
    assert opt.param_groups[0]["lr"] == 5e-4


# ---- 4: RNG streams and data order in the checkpoint -------------------------------------------------------

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


def test_data_order_is_in_the_datamodule_state(tmp_path):
    from sarnet.data import MNISTDataModule

    fake_idx(tmp_path)

    def first_batches(dm, epochs):
        return [next(iter(dm.train_dataloader()))[0] for _ in range(epochs)]

    torch.manual_seed(0)
    ref = MNISTDataModule(tmp_path, val_size=2, batch_size=4)
    ref.setup()
    first_batches(ref, 1)
    state = ref.state_dict()
    expected = first_batches(ref, 2)
    torch.manual_seed(123)  # whatever the global RNG holds on the relaunch
    resumed = MNISTDataModule(tmp_path, val_size=2, batch_size=4)
    resumed.setup()
    resumed.load_state_dict(state)
    torch.rand(5)
    assert all(torch.equal(a, b) for a, b in zip(first_batches(resumed, 2), expected))


# ---- 5: a moved run dir ------------------------------------------------------------------------------------

def test_checkpoint_paths_follow_a_moved_run_dir(tmp_path):
    old, new = tmp_path / "a" / "checkpoints", tmp_path / "b" / "checkpoints"
    state = {"monitor": "val/loss", "best_model_score": torch.tensor(1.0), "best_model_path": str(old / "best.ckpt"),
             "kth_best_model_path": str(old / "best.ckpt"), "kth_value": torch.tensor(1.0),
             "best_k_models": {str(old / "best.ckpt"): torch.tensor(1.0)}, "last_model_path": "",
             "dirpath": str(old)}
    callback = RunCheckpoint(dirpath=new, filename="best", monitor="val/loss")
    callback.load_state_dict(state)
    assert callback.best_model_path == str(new / "best.ckpt")
    assert list(callback.best_k_models) == [str(new / "best.ckpt")] and callback.best_model_score == 1.0


# ---- 8: faults of the disk and of the process --------------------------------------------------------------

@pytest.mark.parametrize("fault", ["killed", "disk full"])
def test_a_failed_checkpoint_write_keeps_the_old_file_and_leaves_no_part(tmp_path, monkeypatch, fault):
    io, path = AtomicCheckpointIO(), tmp_path / "checkpoints" / "last.ckpt"  # the folder made too
    io.save_checkpoint({"state_dict": {"w": torch.ones(3)}, "epoch": 0}, path)
    before = path.read_bytes()

    def fails(fd):  # the new bytes are in the temp file: then the process is gone, or the disk full
        raise KeyboardInterrupt if fault == "killed" else OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "fsync", fails)
    refused = pytest.raises(KeyboardInterrupt) if fault == "killed" else pytest.raises(
        RunDirError, match=f"{path}: cannot write the checkpoint \\(No space left on device\\)")
    with refused:
        io.save_checkpoint({"state_dict": {"w": torch.zeros(3)}, "epoch": 1}, path)
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
    with pytest.raises(RunDirError, match=f"{tmpfs}: cannot write \\(Read-only file system\\)"):
        check_writable(tmpfs)
    with pytest.raises(RunDirError, match=f"{tmpfs}: cannot write \\(Read-only file system\\)"):
        lock_run_dir(tmpfs)


def test_train_py_on_a_read_only_disk_is_one_line_before_hydra_writes(tmpfs):
    subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], check=True)
    rc, out, _ = train("data_dir=/nonexistent", f"hydra.run.dir={tmpfs}/run", timeout=120)
    assert rc == 1 and "Traceback" not in out
    assert error_line(out, "sarnet.rundir.RunDirError") == (f"{tmpfs}/run: cannot write (Read-only file system); free "
                                                             f"space or pick a writable hydra.run.dir")


@needs_data
def test_sigterm_ends_the_run_non_zero_with_one_line_and_no_results(tmp_path):
    rc, out, _ = train("trainer=smoke", "fid=off", "logger=csv", "latent_dim=8", f"hydra.run.dir={tmp_path}",
                       "+callbacks.fault._target_=tests.faults.SigtermAtStart", timeout=300)
    assert rc == 128 + signal.SIGTERM and "Traceback" not in out
    assert error_line(out, "sarnet.rundir.RunDirError").startswith("stopped by SIGTERM before the run finished")
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
@needs_data
def test_a_finished_run_relaunched_with_the_same_config_is_skipped(tmp_path):
    """A relaunched sweep must not test and score its finished jobs again; a changed config does evaluate again."""
    args = ["trainer=smoke", "fid=off", "logger=csv", "latent_dim=8", f"hydra.run.dir={tmp_path}"]
    rc, out, _ = train(*args, timeout=300)
    first = (tmp_path / "results.json").read_bytes()
    assert rc == 0 and json.loads(first)["config_sha256"]
    rc, out, _ = train(*args, timeout=300)
    assert rc == 0 and "finished earlier with this same config: nothing to do" in out
    assert (tmp_path / "results.json").read_bytes() == first
    rc, out, _ = train(*args, "sample.z_scale=0.9", timeout=300)
    assert rc == 0 and "nothing to do" not in out and "done: " in out
    assert json.loads((tmp_path / "results.json").read_text())["config_sha256"] != json.loads(first)["config_sha256"]


@needs_data
def test_sigterm_stops_a_sweep_not_just_its_job(tmp_path):
    """A scheduler's SIGTERM to a sweep (SLURM preemption, scancel) stops it: the running job is recorded as
    stopped, and no further job starts; relaunching the sweep resumes."""
    rc, out, _ = train("-m", "trainer=smoke", "fid=off", "logger=csv", "latent_dim=8,16", f"hydra.sweep.dir={tmp_path}",
                       "+callbacks.fault._target_=tests.faults.SigtermAtStart", timeout=300)
    assert rc == 128 + signal.SIGTERM and "Traceback" not in out
    jobs = sorted(p.name for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 1 and "latent_dim=8" in jobs[0], jobs
    result = json.loads((tmp_path / jobs[0] / "results.json").read_text())
    assert result["status"] == "failed" and "stopped by SIGTERM" in result["error"]


def gone(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ")[1][0] in "ZX"  # a zombie has stopped too
    except (FileNotFoundError, IndexError):
        return True


@pytest.mark.slow
@needs_data
def test_sigterm_to_a_joblib_sweep_stops_its_workers(tmp_path):
    """joblib's workers outlived a SIGTERMed parent and trained on, orphaned: now the parent passes the signal on,
    each worker records its job as stopped and ends, and no further job starts."""
    rc, out, _ = train("-m", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2", "trainer=smoke",
                       "trainer.max_epochs=1000", "fid=off", "logger=csv", "latent_dim=8,16,32",
                       f"hydra.sweep.dir={tmp_path}", "+callbacks.fault.workers=2",
                       "+callbacks.fault._target_=tests.faults.SigtermParentWhenAllTrain",
                       timeout=600)
    assert rc == 128 + signal.SIGTERM and "stopping 2 worker process(es)" in out, out[-3000:]
    jobs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert len(jobs) == 2, jobs  # the third job never started
    for job in jobs:
        result = json.loads((job / "results.json").read_text())
        assert result["status"] == "failed" and "stopped by SIGTERM" in result["error"]
        assert gone(int((job / "worker.pid").read_text()))


# ---- 9: the scripts (the API's and the scripts' refusals: tests/test_api_edges.py, tests/test_bad_inputs.py) ----

def test_scripts_take_a_run_dir_and_never_overwrite_their_output(tmp_path):
    from sarnet.nn import SarNet

    (tmp_path / "checkpoints").mkdir()
    fake_checkpoint(tmp_path / "checkpoints" / "last.ckpt", SarNet(out_activation="sigmoid"))
    outs = []
    for _ in range(2):
        status, stdout, stderr = run_script("sample.py", "--ckpt", tmp_path, "--n", "2", "--device", "cpu")
        assert status == 0, stderr[-2000:]
        outs.append(stdout.split(" -> ")[-1].strip())
    assert outs == [str(tmp_path / "images" / "sample_last.png"), str(tmp_path / "images" / "sample_last_2.png")]


# ---- slow: real training runs ------------------------------------------------------------------------------

@pytest.mark.slow
@needs_data
def test_a_damaged_best_checkpoint_is_refused_before_test(tmp_path):
    rc, out, _ = train("trainer=smoke", "fid=off", "logger=csv", "latent_dim=8", "eval_ckpt=best",
                       f"hydra.run.dir={tmp_path}", "+callbacks.fault._target_=tests.faults.DamageBest", timeout=600)
    assert rc == 1 and "Traceback" not in out
    message = error_line(out, "sarnet.checkpoint.CheckpointError")
    assert message.startswith(f"{tmp_path / 'checkpoints' / 'best.ckpt'}: cannot be read as a checkpoint"), message
    assert not (tmp_path / "results.json").exists()


@pytest.mark.slow
@needs_data
def test_killed_three_times_ends_bit_identical_to_an_uninterrupted_run(tmp_path):
    ok(*RESUMABLE, f"hydra.run.dir={tmp_path / 'ref'}")
    run = tmp_path / "run"
    # Killed right after epoch 0's checkpoint: Lightning logs that epoch's train row only after it, so the row is
    # not in metrics.csv yet (it is in the checkpoint). Then killed mid-epoch, and after a checkpoint again.
    kill_after_checkpoint(run, 0, 0.0)
    out = kill_after_checkpoint(run, 1, 0.3)  # re-run into the same dir: resumes by itself
    assert f"Restoring states from the checkpoint path at {run}/checkpoints/last.ckpt" in out
    kill_after_checkpoint(run, 2, 0.0)
    out = ok(*RESUMABLE, f"ckpt_path={run}")  # ckpt_path=<run dir>: continued there, not in a new dir
    assert f"Restoring states from the checkpoint path at {run}/checkpoints/last.ckpt" in out
    assert_same_run(tmp_path / "ref", run)
    ref, got = results(tmp_path / "ref"), results(run)
    assert (got["epochs"], got["steps"]) == (4, 80)
    assert torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 80
    assert (got["eval_epoch"], got["eval_score"]) == (ref["eval_epoch"], ref["eval_score"])  # the same weights tested
    rows = csv_rows(run)  # each logged once: none lost with the killed runs, none twice by the reruns
    assert epochs_with(rows, "val/loss") == epochs_with(rows, "train/loss") == [0, 1, 2, 3]
    assert epochs_with(rows, "test/loss") == [4]


@pytest.mark.slow
@needs_data
def test_sigterm_then_the_command_it_prints_ends_bit_identical(tmp_path):
    """Launched as a user would (no hydra.run.dir: a new timestamped dir under the working directory), stopped by
    SIGTERM mid-epoch, relaunched with the command its message prints: the run goes on in its own dir and ends as
    an uninterrupted run does, weights, optimizer state, metrics and CSV rows."""
    ok(*RESUMABLE, f"hydra.run.dir={tmp_path / 'ref'}")
    work = tmp_path / "work"
    work.mkdir()
    with open(tmp_path / "stopped.log", "w") as log:
        proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *RESUMABLE, f"data_dir={ROOT / 'data'}"],
                                cwd=work, env=ENV, stdout=log, stderr=subprocess.STDOUT)
        try:  # mid-epoch: 0.3 s after epoch 1's checkpoint (written by rename: never read half-written)
            while proc.poll() is None and not any(torch.load(p, weights_only=True, mmap=True)["epoch"] >= 1
                                                  for p in work.glob("outputs/*/*/checkpoints/last.ckpt")):
                time.sleep(0.01)
            time.sleep(0.3)
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=300) == 128 + signal.SIGTERM
        finally:
            proc.kill()
            proc.wait()
    (run,) = work.glob("outputs/*/*")
    message = error_line((tmp_path / "stopped.log").read_text(), "sarnet.rundir.RunDirError")
    command = shlex.split(message.split("to resume: ", 1)[1])
    assert command[0] == "python" and command[-1] == f"ckpt_path={run}", message
    done = subprocess.run([sys.executable, *command[1:]], cwd=work, env=ENV, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert list(work.glob("outputs/*/*")) == [run] and (run / ".lock").read_text() == ""  # its own dir, released
    assert_same_run(tmp_path / "ref", run)


@pytest.mark.slow
@needs_data
def test_moved_run_dir_resumes_on_its_own_files_and_a_finished_run_keeps_its_metrics(tmp_path):
    base = ["trainer=smoke", "fid=off", "logger=csv", "latent_dim=8"]
    ok(*base, f"hydra.run.dir={tmp_path / 'a'}")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")  # the original is gone: the copy must not point at it
    ok(*base, "trainer.max_epochs=2", f"hydra.run.dir={tmp_path / 'b'}")
    assert sorted(p.name for p in (tmp_path / "b" / "checkpoints").iterdir()) == ["best.ckpt", "last.ckpt"]
    first = results(tmp_path / "b")
    assert first["epochs"] == 2 and first["status"] == "ok"
    # relaunched once finished, with an evaluation setting changed (the same config is skipped outright): nothing
    # to train, the same metrics reported again
    ok(*base, "trainer.max_epochs=2", "sample.z_scale=0.9", f"hydra.run.dir={tmp_path / 'b'}")
    again = results(tmp_path / "b")
    assert again["metrics"] == first["metrics"] and again["steps"] == first["steps"]


@pytest.mark.slow
@needs_data
def test_train_py_refuses_drift_on_resume_before_training(tmp_path):
    base = ["trainer=smoke", "fid=off", "logger=csv", "latent_dim=8", f"hydra.run.dir={tmp_path}"]
    ok(*base)
    digest = (tmp_path / "checkpoints" / "last.ckpt").read_bytes()
    rc, out, _ = train(*base, "trainer.max_epochs=2", "model.net.first_patch=predicted", timeout=300)
    assert rc == 2 and "Traceback" not in out
    assert "model.net.first_patch: 'given' -> 'predicted'" in error_line(out, "sarnet.fields.ConfigError")
    assert (tmp_path / "checkpoints" / "last.ckpt").read_bytes() == digest
    out = ok(*base, "trainer.max_epochs=2", "model.optimizer.lr=5e-4", "resume_override_optimizer=true")
    assert "model.optimizer.lr 0.001 -> 0.0005" in out

