"""Every bad input of tests/bad_inputs.py refused before the work it would waste, in one line, leaving nothing:
in this process (fast; one subprocess checks that field, Hydra and usage errors and --help never import torch), and
as real processes printing the figures by kind (slow).
"""

import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import typing
from collections import Counter
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from lightning.fabric.connector import _PRECISION_INPUT
from omegaconf import OmegaConf

import sarnet.likelihood as lk
import sarnet.sampling as sampling
from sarnet.checkpoint import CheckpointError, load_model, read_checkpoint
from sarnet.config import ConfigError, validate
from sarnet.data import DataError, FashionMNISTDataModule, MNISTDataModule
from sarnet.data.binarized import binarized_test_split
from sarnet.explain import gradient_importance, patch_importance
from sarnet.fields import NOT_TAKEN, PRECISIONS
from sarnet.losses import CrossEntropyLoss, ReconstructionLoss, ssim
from sarnet.metrics import FIDEvaluator, LeNet, fid, knn_accuracy
from sarnet.module import NonFiniteLossError, SarnetModule
from sarnet.nn import ConvVAE, GeometryError, SarNet, SarNetVAE, SemiDense
from tests.bad_inputs import API, CLI, HELP, TRAIN
from tests.conftest import (
    ENV,
    QUICK,
    ROOT,
    assert_autoregressive,
    compose_config,
    dependence,
    fake_checkpoint,
    fake_run,
    make_net,
    needs_data,
    ok,
    python,
    results,
    table,
    train,
    train_inprocess,
)

ERROR = re.compile(r"^(?:\[[^]]*\]\[sarnet\]\[ERROR\] - )?"  # logged, for a stop after work began
                   r"(?:[\w.]+(?:Error|Busy|Stopped)|train\.py: error|sarnet [\w-]+: error|sarnet: error): ")
FILES = re.compile(r"\{(\w+)\}")


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """The files the table's {placeholders} name: a checkpoint of QUICK's net, a truncated one, a run dir holding a
    results.json alone, and copies of the MNIST raw folder (symlinks) with a file deleted, a label flipped (same size:
    refused by the md5 list `make data` wrote, or without that list by the published md5s), the md5 list garbled."""
    if not (ROOT / "data" / "MNIST" / "raw" / ".sarnet-ok.json").exists():
        pytest.skip("run `make data` first")
    root = tmp_path_factory.mktemp("bad_inputs")
    net = validate(compose_config(*QUICK))
    out = {"ckpt": root / "base.ckpt", "damaged": root / "damaged", "finished": root / "finished"}
    fake_run(out["finished"], "vae", 8, 1, fid=1.5)  # a finished run's results.json, without its checkpoints
    fake_checkpoint(out["ckpt"], net, OmegaConf.to_container(OmegaConf.create(net.config)))
    (out["damaged"] / "checkpoints").mkdir(parents=True)
    (out["damaged"] / "checkpoints" / "last.ckpt").write_bytes(out["ckpt"].read_bytes()[:5000])
    for name in ("deleted", "flipped", "published", "garbage"):
        raw = root / f"data_{name}" / "MNIST" / "raw"
        shutil.copytree(ROOT / "data" / "MNIST" / "raw", raw, copy_function=os.symlink)
        labels = raw / "t10k-labels-idx1-ubyte"
        if name == "deleted":
            labels.unlink()
        elif name in ("flipped", "published"):
            data = bytearray(labels.read_bytes())
            labels.unlink()
            data[100] = (data[100] + 1) % 10  # another valid label: only the md5 can tell
            labels.write_bytes(bytes(data))
        if name in ("published", "garbage"):
            (raw / ".sarnet-ok.json").unlink()
        if name == "garbage":
            (raw / ".sarnet-ok.json").write_text("{garbage")
        out[f"data_{name}"] = raw.parents[1]
    return out


def fill(text: str, files) -> str:
    return FILES.sub(lambda m: str(files[m[1]]), text) if FILES.search(text) else text


def outcome(rc, out: str, run_dir: Path | None, expect: str, status=2, found=()) -> dict:
    """What a refusal did: refused with exit `status` in one line naming `expect` (only_line: nothing else was
    printed), a traceback, accepted (rc 0), files left in the run dir beside what was `found` and, in a run dir that
    was there, Hydra's .hydra record of the launch (a new run dir: not left)."""
    lines = [line for line in out.splitlines() if line.strip()]
    errors = [line for line in lines if ERROR.match(line)]
    kept = {*found, ".hydra"} if found else set()
    left = sorted(set(os.listdir(run_dir)) - kept) if run_dir and run_dir.is_dir() else []
    return {"one_line": rc == status and len(errors) == 1 and expect in errors[0], "only_line": len(lines) == 1,
            "traceback": "Traceback" in out, "accepted": rc == 0, "files_left": left,
            "line": (errors or lines or [""])[-1]}


def run_dir(overrides: str, tmp_path) -> tuple[Path, set]:
    """The run dir of a launch (a resume continues in its checkpoint's: ckpt_path=<run dir>) and what it holds."""
    resumed = re.search(r"(?:ckpt_path|hydra\.run\.dir)=(\S+)", overrides)
    run = Path(resumed[1]) if resumed and Path(resumed[1]).is_dir() else tmp_path / "date" / "run"
    return run, set(os.listdir(run)) if run.is_dir() else set()


FIRST_OF_KIND = {e[0]: e for e in reversed(TRAIN)}.values()  # each kind once through the whole of train.py


@pytest.mark.parametrize("kind, overrides, expect", [pytest.param(*e, id=e[1]) for e in TRAIN])
def test_train_refuses_in_one_line_before_work_and_leaves_nothing(kind, overrides, expect, tmp_path, request):
    """validate refuses it, in one line naming the field; what it lets through (Hydra's composition errors, a run
    dir's checkpoint, Lightning's Trainer arguments) train.py refuses, in one line, leaving no new run dir."""
    if FILES.search(overrides) or kind in ("cross", "resource", "file"):  # they pass the field checks: data needed
        needs = request.getfixturevalue("files")
        overrides, expect = fill(overrides, needs), fill(expect, needs)
    line = None
    if kind != "hydra":  # validate's refusal of the composed config, in this process
        try:
            validate(compose_config(*QUICK, *overrides.split()))
        except (ConfigError, DataError) as e:
            line = f"{type(e).__module__}.{type(e).__name__}: {e}"
    if line is not None and (kind, overrides, expect) not in FIRST_OF_KIND:
        assert expect in line and ERROR.match(line) and "\n" not in line, line
        return
    run, found = run_dir(overrides, tmp_path)
    rc, out = train_inprocess(*QUICK, *overrides.split(), f"hydra.run.dir={run}")
    got = outcome(rc, out, run, expect, found=found)
    assert got["one_line"] and not got["traceback"] and not got["files_left"], (got, out[-3000:])
    assert found or not run.parent.exists()  # nor the parent it made (outputs/<date>/)


def test_the_precisions_config_accepts_are_lightnings():
    def flat(t):
        return [v for a in typing.get_args(t) for v in (flat(a) if typing.get_args(a) else [a])]
    assert sorted(map(str, PRECISIONS + NOT_TAKEN)) == sorted(map(str, flat(_PRECISION_INPUT)))


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
    """Random geometry / first_patch / latent_dim on the composed configs (composed once per model, then the fields
    set on a copy): accepted -> autoregressive by gradients; refused -> ConfigError only."""
    seen = Counter()
    # callbacks=none: the image grids' keep_patches=24 is (rightly) refused for nets of fewer patches
    composed = {m: compose_config(f"model={m}", "callbacks=none") for m in ("sarnet", "sarnet_vae")}

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


@pytest.mark.parametrize("argv", [["--help"], ["table", "--help"]])
def test_output_cut_short_by_its_reader_ends_quietly(argv):
    """`sarnet --help | head -1`, the pipe closed before the command starts: no traceback, no 'Exception ignored'."""
    read, write = os.pipe()
    os.close(read)
    env = {k: v for k, v in ENV.items() if k != "PYTHONUNBUFFERED"}  # buffered, as a user's shell has it
    proc = subprocess.run([sys.executable, "-m", "sarnet", *argv], stdout=write, stderr=subprocess.PIPE, text=True,
                          env=env, timeout=120)
    os.close(write)
    assert (proc.returncode, proc.stderr) == (1, "")


TORCH_FREE = """
import io, json, sys, contextlib
from hydra import compose, initialize_config_module
from sarnet.cli import main
from sarnet.config import ConfigError, check_fields
found = {}
commands, fields = json.loads(sys.argv[1])
for argv in commands:  # the real commands, Hydra's composition errors included
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = main(argv)
        except SystemExit as e:
            status = e.code
    found[" ".join(argv)] = {"torch": "torch" in sys.modules, "status": status, "out": out.getvalue(),
                             "err": err.getvalue()}
with initialize_config_module("sarnet.conf", version_base="1.3"):  # train.py's first check, on the composed config
    for overrides in fields:
        try:
            check_fields(compose("config", overrides=overrides))
        except ConfigError:
            pass
        found[" ".join(overrides)] = {"torch": "torch" in sys.modules}
print(json.dumps(found))
"""


def test_usage_errors_are_one_line_helps_end_with_an_example_and_both_and_field_errors_come_before_torch(tmp_path):
    ckpt = tmp_path / "any.ckpt"
    ckpt.write_bytes(b"")  # {ckpt}: any existing file passes the parser's check
    helps = {" ".join([*[name] * bool(name), "--help"]): f"sarnet {name or ''}".strip() for name in [None, *HELP]}
    usage = {fill(a, {"ckpt": ckpt}): expect for a, expect in CLI}
    commands = [a.split() for a in [*helps, *usage]]
    commands += [["train", *QUICK, *o.split(), f"hydra.run.dir={tmp_path / 'run'}"] for k, o, _ in TRAIN
                 if k == "hydra" or o == "seed=-1"]  # seed=-1: a field error through the whole command
    fields = [[*QUICK, *o.split()] for k, o, _ in TRAIN if k == "field"]
    found = json.loads(python("-c", TORCH_FREE, json.dumps([commands, fields])).stdout.splitlines()[-1])
    assert os.listdir(tmp_path) == ["any.ckpt"]  # what a refused command would have made: no run or sweep dir
    imported = [a for a, f in found.items() if f["torch"]]
    assert len(found) > 120 and not imported, imported[:1]  # the first: torch stays imported after it
    for argv, expect in usage.items():
        got = outcome(found[argv]["status"], found[argv]["err"], None, expect)
        assert got["one_line"] and got["only_line"], (argv, found[argv]["err"])
    for argv, command in helps.items():  # argparse's --help exits 0; Hydra's and `sarnet --help` return
        tail = found[argv]["out"].rstrip().split("\n\n")[-1]
        assert found[argv]["status"] in (0, None) and tail.startswith("example") and command in tail, (argv, tail)


def damaged_fid_weights(tmp_path, monkeypatch) -> dict:
    """train.py (in this process) with FID on and the shipped feature network's file damaged (a copy)."""
    weights = tmp_path / "weights"
    shutil.copytree(fid.WEIGHTS_DIR, weights)
    data = bytearray((weights / "lenet_mnist.pt").read_bytes())
    data[len(data) // 2] ^= 0x5A
    (weights / "lenet_mnist.pt").write_bytes(bytes(data))
    monkeypatch.setattr(fid, "WEIGHTS_DIR", weights)
    rc, out = train_inprocess(*QUICK, "fid.enabled=true", f"hydra.run.dir={tmp_path / 'run'}")
    return outcome(rc, out, tmp_path / "run", f"FID feature network {weights / 'lenet_mnist.pt'} is refused")


@needs_data
def test_a_damaged_fid_feature_network_is_one_line_before_training(tmp_path, monkeypatch):
    got = damaged_fid_weights(tmp_path, monkeypatch)
    assert got["one_line"] and not got["traceback"] and not got["files_left"], got


def test_non_finite_loss_names_epoch_step_and_term():
    module = SarnetModule(SarNet(), ReconstructionLoss("power", power=1.0, reduction="mean"), optimizer=None)
    x = torch.rand(2, 1, 28, 28)
    x[0, 0, 5, 5] = float("nan")
    with pytest.raises(NonFiniteLossError, match=r"at epoch 0, step 0 \(term: recon\); the last good checkpoint"):
        module.training_step((x, None), 0)


def nan_stop(tmp_path) -> dict:
    """A run that trains one good epoch, then is resumed with lr = 1e39 applied to the restored optimizer (finite
    as a config value; the first update overflows float32 weights): one line naming the kept checkpoint."""
    ok(*QUICK, f"hydra.run.dir={tmp_path}")
    rc, out = train(*QUICK, f"hydra.run.dir={tmp_path}", f"ckpt_path={tmp_path}", "trainer.max_epochs=2",
                    "model.optimizer.lr=1e39", "resume_override_optimizer=true")
    kept = f"the last good checkpoint is kept: lower the learning rate or check the data ({tmp_path}/checkpoints/"
    return outcome(rc, out, None, kept + "last.ckpt)", status=1)


# ---- table inputs ----------------------------------------------------------------------------------------------

TABLE = [  # (kind, what lies in a sweep dir beside a good run: a results.json's text or a good one's fields changed,
    # the text of the warning or refusal)
    ("table", "[1, 2, 3]", "skipping {bad}: not a JSON object but a list"),
    ("table", "{not json", "skipping {bad}: unreadable"),
    ("table", {"metrics": {"fid/mean": "x"}}, "skipping {bad}: status ok but its metrics"),
    ("table", {"params": None, "latent_dim": "8", "classes": [[1]], "knn": {"n": [1]}, "sampling": {"th": "x",
     "regression": {"p": [1]}}}, "its latent_dim, classes, knn.n, params, sampling.th, sampling.regression.p are"),
    ("table", {"seed": 2, "metrics": {"fid/mean": math.nan}}, "NaN"),  # a NaN FID: a NaN cell, out of the plot
    ("table", None, "(0 failed or stopped; a run with fid=off has none)"),  # no run at all: exit status 2
]


def run_table(tmp_path, bad) -> tuple[int, str, Path]:
    """`sarnet table` on a sweep dir of a good run and `bad` -> (exit status, stderr, output path)."""
    sweep = tmp_path / "sweep"
    sweep.mkdir(parents=True)
    if bad is not None:
        fake_run(sweep / "good", "vae", 8, 1, fid=1.5)
        fake_run(sweep / "bad", "vae", 8, 1, fid=1.5, extra=bad if isinstance(bad, dict) else None)
        if isinstance(bad, str):
            (sweep / "bad" / "results.json").write_text(bad)
    status, _, stderr = table(tmp_path, sweep, check=False)
    return status, stderr, tmp_path / "table"


@pytest.mark.parametrize("kind, bad, expect", TABLE, ids=["list", "garbage", "metric", "params", "nan", "empty"])
def test_table_skips_a_malformed_results_json_shows_nan_and_refuses_no_input(kind, bad, expect, tmp_path):
    rc, stderr, out = run_table(tmp_path, bad)
    expect = expect.replace("{bad}", str(tmp_path / "sweep" / "bad" / "results.json"))
    assert "Traceback" not in stderr
    if bad is None:  # nothing to tabulate: one line, exit status 2, no files
        assert rc == 2 and expect in stderr and len(stderr.strip().splitlines()) == 1, stderr
        assert not list(tmp_path.glob("table.*"))
        return
    assert rc == 0 and out.with_suffix(".png").exists(), stderr
    t = json.loads(out.with_suffix(".json").read_text())["tables"][0]
    assert sorted(t["rows"][0]["seeds"]) == ([1, 2] if expect == "NaN" else [1])  # the good run, always
    if expect == "NaN":
        assert math.isnan(t["rows"][0]["fid_mean"]) and "| NaN |" in out.with_suffix(".md").read_text()
    else:  # one warning line, naming the file
        assert [line for line in stderr.splitlines() if line.startswith("warning")] == [
            line for line in stderr.splitlines() if expect in line], stderr


# ---- the library API (bad_inputs.API) -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def names(tmp_path_factory) -> dict:
    """What the calls of bad_inputs.API name: its nets, torch, sarnet.sampling's functions, constructors, exceptions."""
    torch.manual_seed(0)
    return {**vars(sampling), **{f.__name__: f for f in (
        SemiDense, SarNet, SarNetVAE, SarnetModule, ReconstructionLoss, CrossEntropyLoss, MNISTDataModule, FIDEvaluator,
        FashionMNISTDataModule, make_net, validate, compose_config, ssim, knn_accuracy, patch_importance, ValueError,
        TypeError, GeometryError, DataError, ConfigError, lk.score, lk.exact_log_prob, lk.naive_log_prob,
        lk.LikelihoodError, LeNet, gradient_importance, binarized_test_split)},
        "torch": torch, "vae": SarNetVAE(latent_dim=4), "plain": SarNet(out_activation="sigmoid"),
        "conv": ConvVAE(latent_dim=4), "regression": SarNet(out_activation="none"),
        "strict": SarNet(first_patch="predicted", out_activation="sigmoid"),
        "strict_vae": SarNetVAE(4, first_patch="predicted"), "tmp": tmp_path_factory.mktemp("api"),
        "load_model": load_model, "fake_checkpoint": fake_checkpoint, "CheckpointError": CheckpointError}


@pytest.mark.parametrize("error, call, match", API, ids=[call for _, call, _ in API])
def test_a_call_the_library_cannot_serve_is_one_exception_naming_the_argument(names, error, call, match):
    with pytest.raises(names[error], match=match) as e:
        eval(call, dict(names))
    assert "\n" not in str(e.value)


# ---- real processes (slow: the whole table, and the figures) ---------------------------------------------------

def run_process(argv, run_dir, expect, found=(), timeout=600):
    t0 = time.time()
    proc = python("-X", "importtime", "-m", "sarnet", *argv, timeout=timeout)
    imports = {line.split("|")[-1].strip() for line in proc.stderr.splitlines() if line.startswith("import time:")}
    out = proc.stdout + "\n".join(line for line in proc.stderr.splitlines() if not line.startswith("import time:"))
    return outcome(proc.returncode, out, run_dir, expect, found=found) | {
        "torch": "torch" in imports, "packages": {i.split(".")[0] for i in imports}, "seconds": time.time() - t0}


def test_a_net_that_does_not_build_is_refused_before_the_heavy_libraries(tmp_path):
    got = run_process(["train", "model.net.geometry=[[28,1,3],[28,1,3]]", f"hydra.run.dir={tmp_path}"], tmp_path,
                      "model.net.geometry")
    assert got["one_line"] and not got["traceback"] and got["torch"]  # the net is built to check its geometry
    assert tmp_path.is_dir()  # a run dir the launch did not make stays (only one it made goes)
    assert not got["packages"] & {"lightning", "torchmetrics", "wandb", "torchvision", "matplotlib"}


@pytest.mark.slow
def test_torture_figures(files, names, tmp_path, monkeypatch):
    """Every entry as the user meets it, the figures by kind printed: 0 tracebacks, 0 accepted wrongly, 0 files left,
    every refusal the only line printed, field / Hydra / usage errors and --help before torch."""
    rows = []
    for i, (kind, overrides, expect) in enumerate(TRAIN):
        run, found = run_dir(fill(overrides, files), tmp_path / f"train{i}")
        got = run_process(["train", *QUICK, *fill(overrides, files).split(), f"hydra.run.dir={run}"], run,
                          fill(expect, files), found)
        rows.append((kind, overrides, got))
    for argv, expect in CLI:
        rows.append(("cli", argv, run_process(fill(argv, files).split(), None, expect)))
    for name in HELP:
        got = run_process([name, "--help"], None, "")
        rows.append(("help", name, got | {"one_line": got["accepted"], "only_line": True, "accepted": False}))
    inprocess = {"one_line": False, "only_line": True, "torch": False, "seconds": 0, "files_left": [], "line": ""}
    rows.append(("file", "FID weights", inprocess | damaged_fid_weights(tmp_path / "fid", monkeypatch)))
    nan = nan_stop(tmp_path / "nan")
    rows.append(("stop", "NaN loss", inprocess | nan | {"only_line": True}))
    for i, (kind, bad, expect) in enumerate(TABLE):
        rc, stderr, _ = run_table(tmp_path / f"table{i}", bad)
        rows.append((kind, str(bad)[:30], inprocess | {"one_line": expect.split("}")[-1].strip(": ") in stderr or
                                                        rc == 0, "traceback": "Traceback" in stderr,
                                                        "accepted": bad is None and rc == 0}))
    for error, call, message in API:
        try:
            eval(call, dict(names))
            got = {"accepted": True, "traceback": False, "one_line": False}
        except names[error] as e:
            got = {"accepted": False, "traceback": False, "one_line": bool(re.search(message, str(e)))
                   and "\n" not in str(e)}
        except Exception:  # noqa: BLE001 -- any other kind is what a user would see as a traceback
            got = {"accepted": False, "traceback": True, "one_line": False}
        rows.append(("api", call, inprocess | got))
    figures = Counter()
    for kind, what, got in rows:
        bad_torch = got["torch"] and kind in ("field", "hydra", "cli", "help")
        refused = got["one_line"] and got["only_line"] and not bad_torch and not got["files_left"]
        figures.update({(kind, "tried"): 1, (kind, "refused before work in one line"): refused,
                        (kind, "tracebacks"): got["traceback"], (kind, "accepted wrongly"): got["accepted"],
                        (kind, "files left"): bool(got["files_left"])})
        print(f"{'ok  ' if refused else 'FAIL'} {kind:8} {got['seconds']:5.1f}s {what[:60]:60} {got['line'][:110]}",
              flush=True)
    heads = ["tried", "refused before work in one line", "tracebacks", "accepted wrongly", "files left"]
    print("\n| kind | " + " | ".join(heads) + " |\n|---|" + "---|" * len(heads))
    for kind in dict.fromkeys(k for k, _, _ in rows):
        print(f"| {kind} | " + " | ".join(str(figures[kind, h]) for h in heads) + " |")
    assert all(figures[k, h] == 0 for k, _, _ in rows for h in heads[2:])
    assert all(figures[k, "tried"] == figures[k, heads[1]] for k, _, _ in rows)
    # the NaN stop names its step and keeps the good epoch's checkpoint and results.json
    assert re.search(r"non-finite training loss at epoch 1, step [45] \(term: ", nan["line"]), nan["line"]
    assert read_checkpoint(tmp_path / "nan" / "checkpoints" / "last.ckpt")["epoch"] == 0
    assert results(tmp_path / "nan")["epochs"] == 1
