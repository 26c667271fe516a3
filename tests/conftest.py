"""What the tests share: the repo root, the environment of a subprocess run, train.py as a subprocess or in this
process, the scripts in this process, the session's smoke runs, the real Hydra composition, and tiny fake datasets
in torchvision's raw layout."""

import fcntl
import io
import os
import runpy
import shutil
import subprocess
import sys
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra import compose, initialize_config_dir

ROOT = Path(__file__).resolve().parents[1]
# offline W&B, never a prompt; one thread each, so that tests running side by side do not oversubscribe the CPU
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": "1"}
if os.environ.get("PYTEST_XDIST_WORKER"):  # `make test` runs one worker per core: one thread each, no oversubscription
    torch.set_num_threads(1)
needs_data = pytest.mark.skipif(not (ROOT / "data" / "MNIST" / "raw" / ".sarnet-ok.json").exists(),
                                reason="run `make data` first")


def run_train(*overrides, check=True, timeout=600) -> subprocess.CompletedProcess:
    """The real `python train.py ...` in the repo root. check: fail the test, showing the output, unless rc 0.
    The timeout only guards against a hang; no test depends on how long a run takes."""
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, env=ENV, capture_output=True,
                          text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"train.py {' '.join(overrides)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return proc


def train_inprocess(*overrides) -> tuple[int, str]:
    """`python train.py overrides` in this process (Hydra's own main, the run's exit status): for runs whose test
    needs neither W&B (use logger=csv) nor signals, which run_train keeps in a real subprocess -> (status, output)."""
    status, out, err = run_path(ROOT / "train.py", *overrides)
    return status, out + err


def run_script(script, *args, cwd=ROOT) -> tuple[int, str, str]:
    """`python scripts/<script> args` run from cwd, but in this process: the script's own argument parsing, code
    and exit status without an interpreter start-up (~5 s of imports each) -> (exit status, stdout, stderr).
    W&B runs and signals stay in real subprocesses (tests that need them run the script with subprocess)."""
    return run_path(ROOT / "scripts" / script, *args, cwd=cwd)


def run_path(path, *args, cwd=ROOT) -> tuple[int, str, str]:
    """run_script for any Python file (train.py: train_inprocess)."""
    saved = sys.argv, list(sys.path), os.getcwd()
    out, err = io.StringIO(), io.StringIO()
    sys.argv, status = [str(path), *map(str, args)], 0
    sys.path.insert(0, str(path.parent))  # as python does for a script: its siblings import (gpu_check -> bench)
    os.chdir(cwd)
    try:
        with redirect_stdout(out), redirect_stderr(err):
            runpy.run_path(str(path), run_name="__main__")
    except SystemExit as e:  # sys.exit("message") prints the message and exits 1, as python does
        status = e.code if isinstance(e.code, int) else 0 if e.code is None else 1
        if isinstance(e.code, str):
            err.write(e.code + "\n")
    finally:
        sys.argv, sys.path[:] = saved[0], saved[1]
        os.chdir(saved[2])
    return status, out.getvalue(), err.getvalue()


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """model -> the run dir of one real `python train.py model=<model> trainer=smoke fid=off latent_dim=8` run (W&B
    offline and CSV), trained on first request and shared by the session's tests: the smoke-run checks and the
    CLIs' checkpoints. Tests may add files to it (a script's image, a W&B run), never change what training wrote.
    Under pytest-xdist the workers share it too: the first to ask trains it, under a file lock, the others wait."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: basetemp/popen-gwN

    def get(model):
        if not (ROOT / "data" / "MNIST" / "raw" / ".sarnet-ok.json").exists():
            pytest.skip("MNIST is not prepared: run `make data` first")
        run_dir = shared / f"smoke_{model}"
        with open(shared / f"smoke_{model}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (run_dir / "results.json").exists():
                shutil.rmtree(run_dir, ignore_errors=True)  # a run that failed under another worker: again
                run_train(f"model={model}", "trainer=smoke", "fid=off", "latent_dim=8", f"hydra.run.dir={run_dir}")
        return run_dir
    return get


def compose_config(*overrides):
    """conf/config.yaml composed in-process with these overrides, as train.py would see it."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides))


def fake_idx(root, folder="MNIST", n_train=200, n_test=50, seed=0):
    """A tiny dataset in torchvision's raw layout under root/folder/raw: random pixels, labels cycling 0..9."""
    from sarnet.data.sources import write_idx

    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(Path(root) / folder / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(Path(root) / folder / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return Path(root)
