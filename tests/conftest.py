"""What the tests share: train.py and the scripts run as a subprocess or in this process, the session's smoke runs,
offline W&B runs read back, the composed config, fake datasets, checkpoints and runs, small nets of every model config
and their rule."""

import csv
import fcntl
import io
import json
import os
import runpy
import shutil
import struct
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
DATA_READY = (ROOT / "data" / "MNIST" / "raw" / ".sarnet-ok.json").exists()
needs_data = pytest.mark.skipif(not DATA_READY, reason="run `make data` first")


def python(*args, cwd=ROOT, env=ENV, timeout=600, check=False) -> subprocess.CompletedProcess:
    """`python args` as a subprocess -> its CompletedProcess (text); check: exit 0 or fail, showing the output."""
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0 or not check, f"{args} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


def train(*overrides, timeout=600, env=ENV) -> tuple[int, str]:
    """The real `python train.py overrides` in the repo root -> (status, stdout + stderr)."""
    proc = python("train.py", *overrides, timeout=timeout, env=env)
    return proc.returncode, proc.stdout + proc.stderr


def ok(*overrides, timeout=600) -> str:
    """train.py as a subprocess that must succeed -> its output (else the test fails, showing it)."""
    proc = python("train.py", *overrides, timeout=timeout, check=True)
    return proc.stdout + proc.stderr


def error_line(out: str, kind: str) -> str:
    """The message of the last `kind: message` line in a run's output (kind: the error's qualified class name)."""
    lines = [line.split(f"{kind}: ", 1)[1] for line in out.splitlines() if f"{kind}: " in line]
    assert lines, f"no {kind} in the output:\n{out[-3000:]}"
    return lines[-1]


def results(run_dir: Path) -> dict:
    return json.loads((run_dir / "results.json").read_text())


def csv_rows(run_dir: Path) -> list[dict]:
    return list(csv.DictReader((run_dir / "csv" / "metrics.csv").read_text().splitlines()))


def assert_same_run(ref: Path, run: Path):
    """`run`, stopped and resumed, ended as the uninterrupted `ref`: metrics, epochs, steps, metrics.csv, last.ckpt."""
    a, b = results(ref), results(run)
    assert b["metrics"] == a["metrics"] and (b["epochs"], b["steps"]) == (a["epochs"], a["steps"])
    ca, cb = (torch.load(d / "checkpoints" / "last.ckpt", weights_only=True) for d in (ref, run))
    for key in ("state_dict", "optimizer_states"):  # exactly equal (rtol = atol = 0), dtypes too
        torch.testing.assert_close(cb[key], ca[key], rtol=0, atol=0)
    assert cb["lr_schedulers"] == ca["lr_schedulers"]  # their states: plain numbers, equal too
    assert csv_rows(run) == csv_rows(ref)


def records(run_dir: Path):
    """The protobuf records of an offline run's .wandb file (wandb has no reader): a LevelDB-style log, 32 KiB blocks,
    each record chunk behind a 7-byte (crc, length, type) header."""
    from wandb.proto import wandb_internal_pb2 as pb

    (path,) = run_dir.glob("*.wandb")
    data, pos, chunk = path.read_bytes(), 7, b""  # 7-byte file header: ":W&B", magic, version
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        left = 32768 - pos % 32768
        if left < 7 or data[pos + 4:pos + 7] == bytes(3):  # padding: a block's tail too short for a header, or zeros
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk += data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):  # FULL or LAST: a whole record
            record = pb.Record()
            record.ParseFromString(chunk)
            chunk = b""
            yield record


def read_run(run_dir: Path) -> dict:
    """{id, name, group, job_type, tags, config (top-level keys -> values), summary, history keys, files (saved
    with the run), artifacts ({name: {"type", "aliases", "files": {path: local path}}})}."""
    out = {"config": {}, "summary": {}, "history": set(), "files": set(), "artifacts": {}}
    for r in records(run_dir):
        kind = r.WhichOneof("record_type")
        if kind == "files":
            out["files"] |= {f.path for f in r.files.files}
        elif kind == "artifact":
            a = r.artifact
            out["artifacts"][a.name] = {"type": a.type, "aliases": set(a.aliases),
                                        "files": {e.path: e.local_path for e in a.manifest.contents}}
        elif kind == "run":
            out |= {"id": r.run.run_id, "name": r.run.display_name, "group": r.run.run_group,
                    "job_type": r.run.job_type, "tags": list(r.run.tags)}
            out["config"] |= {i.key: json.loads(i.value_json) for i in r.run.config.update}
        elif kind == "summary":
            out["summary"] |= {i.key: json.loads(i.value_json) for i in r.summary.update if i.key}
        elif kind == "history":
            out["history"] |= {i.nested_key[0] if i.nested_key else i.key for i in r.history.item}  # media: nested
    return out


def offline_runs(d: Path):
    return sorted(d.glob("wandb/offline-run-*"))


QUICK = ["trainer=smoke", "fid=off", "logger=csv", "latent_dim=8"]  # a smoke run without FID and W&B
# Small enough for CPU, long enough (20 batches an epoch) to be killed mid-training.
RESUMABLE = [*QUICK, "trainer.max_epochs=4", "trainer.limit_train_batches=20"]


def train_inprocess(*overrides, check=False) -> tuple[int, str]:
    """`python train.py overrides` in this process -> (status, output), for runs without W&B (logger=csv) or signals."""
    status, out, err = run_script(ROOT / "train.py", *overrides, check=check)
    return status, out + err


def run_script(script, *args, cwd=ROOT, check=False) -> tuple[int, str, str]:
    """`python scripts/<script> args` (or a file's path) run from cwd in this process, without a ~5 s interpreter
    start-up (W&B runs and signals need a subprocess) -> (exit status, stdout, stderr); check: status 0 or fail."""
    path, saved = ROOT / "scripts" / script, (sys.argv, list(sys.path), os.getcwd())  # an absolute path stays itself
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
    assert status == 0 or not check, (out.getvalue() + err.getvalue())[-3000:]
    return status, out.getvalue(), err.getvalue()


# The smoke runs' models: a model config, or the experiment that trains it (nll_vae: a density model, a conv VAE on
# binarized MNIST-5 whose checkpoint the likelihood tests score).
SMOKE = {"sarnet_cls": ["experiment=cls_sarnet", "data.quantize=4"], "sarnet_prob": ["experiment=cls_sarnet_prob"],
         "nll_vae": ["experiment=nll_vae", "data=mnist5", "likelihood=off"]}


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory):
    """model -> the run dir of one real `train.py model=<model> trainer=smoke fid=off latent_dim=8` run (SMOKE's
    overrides for a model it names), trained on first request, shared by the session (xdist workers too, under a file
    lock). Tests may add files to it (a script's image, a W&B run), never change what training wrote."""
    base = tmp_path_factory.getbasetemp()
    shared = base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base  # xdist: basetemp/popen-gwN

    def get(model):
        if not DATA_READY:
            pytest.skip("MNIST is not prepared: run `make data` first")
        run_dir = shared / f"smoke_{model}"
        with open(shared / f"smoke_{model}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if not (run_dir / "results.json").exists():
                shutil.rmtree(run_dir, ignore_errors=True)  # a run that failed under another worker: again
                ok(*SMOKE.get(model, [f"model={model}"]), "trainer=smoke", "fid=off", "latent_dim=8",
                   f"hydra.run.dir={run_dir}")
        return run_dir
    return get


def compose_config(*overrides, hydra=False):
    """conf/config.yaml composed in-process with these overrides, as train.py sees it (hydra: with the hydra node)."""
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=list(overrides), return_hydra_config=hydra)


def fake_idx(root, folder="MNIST", n_train=200, n_test=50, seed=0):
    """A tiny dataset in torchvision's raw layout under root/folder/raw: random pixels, labels cycling 0..9."""
    from sarnet.data.sources import write_idx

    rng = np.random.default_rng(seed)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        write_idx(Path(root) / folder / "raw" / f"{prefix}-images-idx3-ubyte", rng.integers(0, 256, (n, 28, 28)))
        write_idx(Path(root) / folder / "raw" / f"{prefix}-labels-idx1-ubyte", np.arange(n) % 10)
    return Path(root)


def fake_checkpoint(path, net, config=None):
    """A sarnet checkpoint of `net` as load_model reads it; config: the stored net config (default: the net's own)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)  # a run dir's checkpoints/, say
    torch.save({"sarnet": {"net": net.config if config is None else config, "format": 1},
                "state_dict": {f"net.{k}": v for k, v in net.state_dict().items()}}, path)
    return path


# Every kind of net conf/model/ builds, small (and the reference's 28x28 geometries, wide enough for FLUSH_COLUMNS):
# name -> (geometry, out_activation). Sigmoid: SarNET-VAE with z, Bernoulli SarNET without; none: regression SarNET;
# softmax with C channels: one-hot classification SarNET, with one the "probability" net (sarnet_prob).
REFERENCE = [[28, 1, 4], [14, 2, 2], [28, 2, 4], [28, 1, 4]]
NETS = {
    "pixel": ([[4, 1, 1], [4, 2, 1], [4, 1, 1]], "sigmoid"),
    "pixel-3ch": ([[4, 3, 1], [4, 2, 1], [4, 3, 1]], "sigmoid"),
    "patch2": ([[8, 1, 2], [4, 3, 1], [8, 2, 2], [8, 1, 2]], "sigmoid"),
    "2ch": ([[12, 2, 4], [6, 1, 2], [12, 2, 4]], "sigmoid"),
    "reference": (REFERENCE, "sigmoid"),
    "patch7": ([[28, 1, 7], [4, 2, 1], [28, 1, 7]], "sigmoid"),
    "regression-pixel": ([[6, 1, 1], [6, 2, 1], [6, 1, 1]], "none"),
    "regression-patch2": ([[8, 1, 2], [4, 3, 1], [8, 2, 2], [8, 1, 2]], "none"),
    "regression": (REFERENCE, "none"),
    "cls-pixel-c2": ([[6, 2, 1], [6, 2, 1], [6, 2, 1]], "softmax"),
    "cls-pixel-c4": ([[4, 4, 1], [4, 3, 1], [4, 4, 1]], "softmax"),
    "cls-patch2-c2": ([[8, 2, 2], [4, 3, 1], [8, 2, 2], [8, 2, 2]], "softmax"),
    "cls-patch2-c4": ([[8, 4, 2], [4, 3, 1], [8, 2, 2], [8, 4, 2]], "softmax"),
    "cls-patch4-c2": ([[12, 2, 4], [6, 1, 2], [12, 2, 4]], "softmax"),
    "cls-c4": ([[28, 4, 4], [14, 2, 2], [28, 2, 4], [28, 4, 4]], "softmax"),  # sarnet_cls with data.quantize=4
    "prob-pixel": ([[6, 1, 1], [6, 2, 1], [6, 2, 1]], "softmax"),
    "prob-patch2": ([[8, 1, 2], [4, 3, 1], [8, 2, 2], [8, 2, 2]], "softmax"),
    "prob": ([[12, 1, 4], [12, 1, 4], [12, 2, 4], [12, 2, 4]], "softmax"),  # sarnet_prob's shape: the side kept
}
MODES = ["given", "predicted"]


def latents(name) -> tuple:
    """The latent sizes a NETS case is tested with: sigmoid nets without and with z, the others without."""
    return (0, 3) if NETS[name][1] == "sigmoid" else (0,)


def make_net(name, mode, latent=0, seed=0):
    """NETS[name] in layer mode `mode`, with `latent` z dims: a SarNET-VAE for a sigmoid net with z, else a SarNet."""
    from sarnet.nn import SarNet, SarNetVAE

    geometry, activation = NETS[name]
    torch.manual_seed(seed)
    if latent and activation == "sigmoid":
        return SarNetVAE(latent, geometry, first_patch=mode)
    return SarNet(geometry, latent_dim=latent, first_patch=mode, out_activation=activation)


def images(net, n, seed=0, dtype=torch.float32):
    """n data-like inputs of a net: one-hot classes for a classification net, grey levels in [0, 1) otherwise."""
    g = torch.Generator().manual_seed(seed)
    channels, side = net.image_shape[:2]
    if not getattr(net.ar_net, "one_hot_input", False):
        return torch.rand(n, *net.image_shape, generator=g, dtype=dtype)
    level = torch.randint(0, channels, (n, 1, side, side), generator=g)
    return (level == torch.arange(channels).view(1, -1, 1, 1)).to(dtype)


def dependence(f, x, out_deg, in_deg, n_patches) -> torch.Tensor:
    """dep[k, j]: the sum of f(x)'s output units of patch k (out_deg: their patches) has a non-zero gradient wrt
    some input unit of patch j (in_deg: those of x's units)."""
    one_hot = torch.nn.functional.one_hot
    patch_sums = lambda v: f(v).flatten(1).sum(0) @ one_hot(out_deg, n_patches).to(x.dtype)
    jac = torch.autograd.functional.jacobian(patch_sums, x, vectorize=True)  # (output patches, *x.shape)
    touched = jac.reshape(n_patches, len(x), -1).ne(0).any(1).float()  # (output patches, input units)
    return touched @ one_hot(in_deg, n_patches).float() > 0


def assert_autoregressive(dep, first_patch):
    """The rule a net's masks must make: output patch k reads input patches < k only, and patch k - 1 among them
    (it uses its context). Output patch 0 reads input patch 0 in "given" mode (the reference copies it,
    docs/reference.md §2.1), nothing in "predicted" mode."""
    allowed = torch.ones_like(dep).tril(-1)
    allowed[0, 0] = first_patch == "given"
    assert not (dep & ~allowed).any(), f"leak: outputs read inputs >= themselves: {(dep & ~allowed).nonzero()}"
    assert all(dep[k, k - 1] for k in range(1, len(dep))) and dep[0, 0] == allowed[0, 0], "context unused"


RECIPE_EPOCHS = {"sarnet_vae": 200, "vae": 250, "sarnet": 500}  # conf/recipe/, the thesis' training lengths


def fake_run(dir, model, latent, seed, fid=None, status="ok", dataset="mnist", classes=(5,), wall=360.0, device=None,
             first_patch=None, epochs=None, extra=None, **protocol):
    """A fabricated results.json in `dir` (ok or failed) on the thesis' FID protocol unless `protocol` changes it;
    extra: fields added, a dict merged into the field's ({"sampling": {"dtype": "bfloat16"}} keeps the others)."""
    from sarnet.metrics.fid import SHIPPED_SHA256

    thesis = {"features": "slim-lenet-v1", "features_sha256": SHIPPED_SHA256.get("mnist"), "n_gen": 10000,
              "n_sets": 10, "real_set": "test_resampled", "seed": 2024}
    dir.mkdir(parents=True)
    r = {"status": status, "model": model, "latent_dim": latent, "seed": seed}
    if first_patch:
        r["first_patch"] = first_patch
    if status == "ok":
        r |= {"epochs": epochs or RECIPE_EPOCHS.get(model, 200), "wall_time_s": wall,
              "params": {"dense": 2_958_648, "effective": 1_898_808},
              "device": device, "dataset": dataset, "classes": list(classes) if classes else None, "eval_ckpt": "last",
              "sampling": {"method": "fast", "th": 0.105, "z_scale": 1.0, "dtype": "float32"}, "precision": "32-true",
              "fid_protocol": thesis | {"dtype": "float32"} | protocol,
              "fid_matched": {"none": {"mean": fid + 1, "std": 0.2, "values": [fid + 1]}},
              "knn": {"n": 1000, "k": 4, "seed": 42},
              "metrics": {"fid/mean": fid, "fid/std": 0.1, "test/loss": 101.5, "knn/accuracy": 0.6}}
    else:
        r["error"] = "ConfigError: latent_dim=0 is invalid"
    for key, value in (extra or {}).items():
        r[key] = r[key] | value if isinstance(r.get(key), dict) and isinstance(value, dict) else value
    (dir / "results.json").write_text(json.dumps(r))


def table(tmp_path, *dirs, check=True):
    """`sarnet table` on run dirs -> (its JSON, Markdown, output path), or with check=False (status, stdout, stderr)."""
    out = tmp_path / "table"
    status, stdout, stderr = run_script("fid_table.py", *dirs, "--out", out, check=check)
    if check:
        return json.loads(out.with_suffix(".json").read_text()), out.with_suffix(".md").read_text(), out
    return status, stdout, stderr
