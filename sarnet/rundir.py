"""One writer per run dir, and a run dir that can be written, each refused in one line before any work; torch-free,
for train.py and Hydra's start-up callback to use before the heavy imports."""

import fcntl
import logging
import os
import shlex
import sys
from pathlib import Path

from sarnet.io import atomic_write

log = logging.getLogger("sarnet")


class RunDirError(RuntimeError):
    """The run dir cannot be used: another train.py writes into it, or it is not writable."""


class RunDirBusy(RunDirError):
    """Another live train.py holds the run dir's lock."""


def lock_run_dir(run_dir):
    """Take <run>/.lock (flock, our pid inside) or refuse in one line -> the lock. flock, not a pid file: the kernel
    drops it when its owner dies (SIGKILL too), and a recycled pid cannot pass for a live owner."""
    check_writable(run_dir)
    path = Path(run_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirBusy(f"{path.parent} is in use by another train.py (pid {owner or 'unknown'}, holding {path}): "
                         f"one run dir has one writer; wait for it to end or stop it, or pick another "
                         f"hydra.run.dir") from None
    if owner:  # unlock_run_dir empties the file: a pid left in it is of an owner that died holding the lock
        log.warning("%s: taking over the lock of pid %s, which is gone", path, owner)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def unlock_run_dir(lock):
    if lock is not None:  # emptied first: running_jobs then sees no owner
        os.ftruncate(lock, 0)
        os.close(lock)


def running_jobs(sweep_dir) -> dict:
    """{lock file: pid} of the sweep's jobs whose live owner holds their run dir now."""
    jobs = {}
    for path in Path(sweep_dir).glob("*/.lock"):
        try:
            jobs[path] = int(path.read_text())
            os.kill(jobs[path], 0)  # alive?
        except (OSError, ValueError):  # gone, released, or not yet written
            jobs.pop(path, None)
    return jobs


def hydra_args(argv: list[str]) -> list[str]:
    """`--key=value` -> the override `key=value`, unless `--key` is one of Hydra's own flags (--config-dir=...)."""
    from hydra._internal.utils import get_args_parser

    flags = get_args_parser()._option_string_actions
    return [a[2:] if a.startswith("--") and "=" in a and a.split("=", 1)[0] not in flags else a for a in argv]


def relaunch_command(run_dir=None, sweep_dir=None) -> str:
    """This launch's command as typed, continuing its run (ckpt_path=<run dir>; init_ckpt goes: the checkpoint holds
    it) or its sweep (hydra.sweep.dir=<dir>: finished jobs are skipped); neither given: unchanged."""
    def shown(exe, name):  # an interpreter or command inside the working dir (make's .venv/bin/python): its path
        return os.path.relpath(exe) if Path(exe).absolute().is_relative_to(Path.cwd()) else name

    prog, args, python = sys.argv[0], hydra_args(sys.argv[1:]), shown(sys.executable, "python")
    head = [python, "-m", "sarnet"] if prog.endswith("__main__.py") else \
        [python, prog] if prog.endswith(".py") else [shown(prog, Path(prog).name)]
    drop, add = ("hydra.sweep.dir=",), [f"hydra.sweep.dir={sweep_dir}"]
    if sweep_dir is None:
        drop, add = (("hydra.run.dir=", "ckpt_path=", "init_ckpt="), [f"ckpt_path={run_dir}"]) if run_dir else ((), [])
    return shlex.join([*head, *(a for a in args if not a.startswith(drop)), *add])


def check_writable(*dirs):
    """A probe written and removed in each dir: a read-only or full disk fails here, not at the first checkpoint."""
    for d in map(Path, dirs):
        try:
            atomic_write(d / f".probe.{os.getpid()}", bytes(4096))  # the dir made too
            (d / f".probe.{os.getpid()}").unlink()
        except OSError as e:
            raise RunDirError(f"{d}: cannot write ({e.strerror}); free space or pick a writable hydra.run.dir") \
                from None
