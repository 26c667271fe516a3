"""One writer per run dir, and a run dir that can be written: checked before any work, in one line each.

Kept free of Lightning and torch: train.py and Hydra's start-up callback use it before the heavy imports."""

import fcntl
import logging
import os
import shlex
import sys
import tempfile
from pathlib import Path

log = logging.getLogger("sarnet")


class RunDirError(RuntimeError):
    """The run dir cannot be used: another train.py writes into it, or it is not writable."""


class RunDirBusy(RunDirError):
    """Another live train.py holds the run dir's lock."""


def _rank() -> int:
    # Lightning's DDP launcher starts ranks 1.. as copies of train.py on the same run dir, with these variables
    # set; srun sets SLURM_PROCID. Only rank 0 writes checkpoints and results, so only rank 0 takes the lock.
    for key in ("RANK", "LOCAL_RANK", "SLURM_PROCID"):
        if os.environ.get(key, "").isdigit():
            return int(os.environ[key])
    return 0


def lock_run_dir(run_dir: Path):
    """Take <run>/.lock (flock, our pid inside) or refuse with one line. -> (fd, path) for unlock_run_dir, or None
    off rank 0.

    flock, not the pid alone: the kernel drops the lock when its process dies (also on SIGKILL), so a dead
    owner's lock is free to take, and a recycled pid cannot pass for a live owner. Two launches of one sweep
    (an orphaned joblib worker and its relaunch) would otherwise train into one dir and mix their CSV rows.
    """
    if _rank() != 0:
        return None
    path = Path(run_dir) / ".lock"
    while True:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as e:
            raise RunDirError(f"{path.parent}: cannot write into the run dir ({e.strerror}); pick a writable "
                              f"hydra.run.dir") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            owner = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise RunDirBusy(f"{path.parent} is in use by another train.py (pid {owner}, holding {path}): one run "
                             f"dir has one writer; wait for it to end or stop it, or pick another hydra.run.dir") \
                from None
        if path.exists() and os.stat(path).st_ino == os.fstat(fd).st_ino:
            break
        os.close(fd)  # its owner removed the file between our open and flock (unlock_run_dir): open the new one
    old = os.pread(fd, 32, 0).decode(errors="replace").strip()
    if old and old != str(os.getpid()):
        log.warning("%s: taking over the lock of pid %s, which is gone", path, old)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd, path


def unlock_run_dir(lock):
    """Remove the lock file, then release it: a run dir that ended keeps no .lock. A process that opened the file
    just before the removal gets the lock on a file that is gone, and lock_run_dir makes it open the new one."""
    if lock is not None:
        lock[1].unlink(missing_ok=True)
        os.close(lock[0])


def running_jobs(sweep_dir) -> dict:
    """{lock file: pid} of the sweep's jobs that hold their run dir now (a live owner; unlock_run_dir removes it)."""
    jobs = {}
    for path in Path(sweep_dir).glob("*/.lock"):
        try:
            pid = int(path.read_text().strip())
            os.kill(pid, 0)  # alive?
        except (OSError, ValueError):  # gone, released meanwhile, or not yet written
            continue
        jobs[path] = pid
    return jobs


def relaunch_command(run_dir=None, sweep_dir=None) -> str:
    """This launch's command as it was typed (python train.py ..., sarnet train ...), continuing its run
    (ckpt_path=<run dir>: the dir must hold a checkpoint) or its sweep (hydra.sweep.dir=<dir>: finished jobs are
    skipped, the others resume or start); neither given: unchanged."""
    from sarnet.cli.train import hydra_args

    def shown(exe, name):  # an interpreter or command inside the working dir (make's .venv/bin/python): its path
        return os.path.relpath(exe) if Path(exe).absolute().is_relative_to(Path.cwd()) else name

    prog, args, python = sys.argv[0], hydra_args(sys.argv[1:]), shown(sys.executable, "python")
    head = [python, "-m", "sarnet"] if prog.endswith("__main__.py") else \
        [python, prog] if prog.endswith(".py") else [shown(prog, Path(prog).name)]
    if sweep_dir is not None:
        args = [a for a in args if not a.startswith("hydra.sweep.dir=")] + [f"hydra.sweep.dir={sweep_dir}"]
    elif run_dir is not None:  # init_ckpt: the checkpoint holds the weights it started from
        args = [a for a in args if not a.startswith(("hydra.run.dir=", "ckpt_path=", "init_ckpt="))]
        args.append(f"ckpt_path={run_dir}")
    return shlex.join([*head, *args])


def check_writable(*dirs):
    """Create and remove a probe file in every dir the run writes to: a read-only or full disk fails here, in
    one line, before any training, not at the first checkpoint."""
    for d in dirs:
        d = Path(d)
        try:
            d.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=d, prefix=".probe.")
            try:
                os.write(fd, b"x" * 4096)
                os.fsync(fd)
            finally:
                os.close(fd)
                os.unlink(tmp)
        except OSError as e:
            raise RunDirError(f"{d}: cannot write ({e.strerror}); free space or pick a writable "
                              f"hydra.run.dir") from None
