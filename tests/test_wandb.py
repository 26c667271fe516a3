"""W&B as a user sees it: images equal to the PNGs on disk, readable names/groups/config/summary, one run per job
(also on resume), the sweep's summary run in the sweep's group, offline fallback with one line, FID progress.
"""

import json
import logging
import socket
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from sarnet import progress, tracking
from tests.conftest import ENV, ROOT, compose_config, fake_run, needs_data, offline_runs, python, read_run

FAKE_KEY = "0123456789abcdef0123456789abcdef01234567"  # 40 characters, like a real key; no server will accept it


# ---- single runs ---------------------------------------------------------------------------------------------

@needs_data
def test_run_images_name_config_summary_files_and_checkpoints(tmp_path):
    # as a W&B sweep agent launches it (--key=value, WANDB_RUN_ID) on a cluster node: a key, no reachable server
    env = {k: v for k, v in ENV.items() if k != "WANDB_MODE"} | {"WANDB_RUN_ID": "agentrun1", "WANDB_API_KEY": FAKE_KEY}
    proc = python("train.py", "trainer=smoke", "--fid=off", "--latent_dim=8", "--data.val_size=0.2",
                  f"hydra.run.dir={tmp_path}", env=env, check=True)
    out = proc.stdout + proc.stderr
    notes = [line for line in out.splitlines() if "W&B:" in line]
    assert len(notes) == 1 and "logging offline" in notes[0], notes  # trains offline, saying so once
    (run_dir,) = offline_runs(tmp_path)
    # 1. every logged image is the PNG saved under images/, pixel for pixel, and not black
    for key in ("samples", "reconstructions", "completions"):
        (media,) = run_dir.glob(f"files/media/images/{key}_*.png")
        (disk,) = tmp_path.glob(f"images/{key}_epoch000.png")
        logged, saved = np.asarray(Image.open(media)), np.asarray(Image.open(disk))
        assert logged.dtype == np.uint8 and logged.max() > 100, (key, logged.max())
        assert np.array_equal(logged, saved), key
    # 2. readable in the W&B UI
    run = read_run(run_dir)
    assert run["name"] == "sarnet_vae-L8-s1234 fid=off data.val_size=0.2"
    assert run["job_type"] == "train" and run["tags"] == ["sarnet_vae", "mnist5", "bce"]
    results = json.loads((tmp_path / "results.json").read_text())
    config = run["config"]
    assert config["params_dense"] == results["params"]["dense"] > config["params_effective"] > 0
    assert (config["model_name"], config["data_name"], config["loss_name"]) == ("sarnet_vae", "mnist5", "bce")
    assert config["fid"]["n_sets"] == 2 and config["paths"]["output_dir"] == str(tmp_path)
    assert run["summary"]["test/loss"] == pytest.approx(results["metrics"]["test/loss"])
    assert run["summary"]["status"] == "ok"
    assert json.loads((tmp_path / tracking.RUN_FILE).read_text())["id"] == run["id"] == "agentrun1"
    # 3. results.json and the resolved config are files of the run; the checkpoints its model artifact
    assert {"results.json", "resolved_config.yaml"} <= run["files"]
    assert json.loads((run_dir / "files" / "results.json").read_text()) == results
    resolved = OmegaConf.load(run_dir / "files" / "resolved_config.yaml")
    assert resolved.latent_dim == 8 and resolved.paths.output_dir == str(tmp_path) and "${" not in str(resolved)
    model = run["artifacts"]["model-agentrun1"]
    assert model["type"] == "model" and model["aliases"] == {"latest", "epoch-1"}
    assert sorted(model["files"]) == ["best.ckpt", "last.ckpt"]
    for name, local in model["files"].items():
        assert Path(local).read_bytes() == (tmp_path / "checkpoints" / name).read_bytes()
    assert (tmp_path / ".lock").read_text() == ""  # a finished run leaves no lock owner


def test_fid_likelihood_and_sample_log_eval_runs_beside_their_training_run(smoke_run):
    run_dir = smoke_run("nll_vae")
    for command, *args in (["fid", "--n-gen", "32", "--n-sets", "2"], ["sample", "--n", "4"],
                           ["likelihood", "--k", "2", "--max-images", "16", "--no-progress"]):
        python("-m", "sarnet", command, "--ckpt", run_dir, "--device", "cpu", "--wandb", *args, check=True)
    runs = {r["job_type"] + ":" + r["tags"][0]: r for r in map(read_run, offline_runs(run_dir))}
    train = runs.pop("train:vae")
    assert train["name"] == train["group"] == "vae-L8-s1234 experiment=nll_vae data=mnist5 likelihood=off fid=off"
    assert sorted(runs) == ["eval:fid", "eval:likelihood", "eval:sample"]
    assert list(run_dir.glob("wandb/offline-run-*/files/media/images/sample_*.png"))
    for command in ("fid", "likelihood", "sample"):
        run = runs[f"eval:{command}"]
        assert run["group"] == train["group"] and run["name"] == f"{train['name']} {command}"
        assert run["config"]["train_run_id"] == train["id"] and run["tags"] == [command]
    assert runs["eval:fid"]["summary"]["fid/mean"] > 0 and runs["eval:fid"]["summary"]["n_gen"] == 32
    assert runs["eval:likelihood"]["summary"]["test/nll"] > 0 and runs["eval:likelihood"]["summary"]["n_images"] == 16


def test_the_wandb_sweep_example_gives_overrides_train_py_takes():
    """docs/wandb_sweep.yaml: an agent passes each parameter as --key=value (its ${args}); train.py's entry turns
    them into overrides that compose and validate, and the sweep's metric is one train.py logs."""
    from sarnet.config import validate
    from sarnet.rundir import hydra_args

    sweep = OmegaConf.to_container(OmegaConf.load(ROOT / "docs" / "wandb_sweep.yaml"))
    assert sweep["program"] == "train.py" and "${args}" in sweep["command"]
    params = sweep["parameters"]
    agent_args = [f"--{k}={v['values'][0] if 'values' in v else v['min']}" for k, v in params.items()]
    fixed = [a for a in sweep["command"] if "=" in a]
    cfg = compose_config(*hydra_args(agent_args + fixed), f"optimized_metric={sweep['metric']['name']}")
    validate(cfg)
    assert cfg.latent_dim == params["latent_dim"]["values"][0] and cfg.model.optimizer.lr == params[
        "model.optimizer.lr"]["min"]


def test_online_without_a_key_or_a_server_falls_back_offline_with_one_line(monkeypatch, tmp_path, caplog):
    server = socket.create_server(("127.0.0.1", 0))  # the probe: a listening port is reachable, a closed one not
    port = server.getsockname()[1]
    probe = tracking.reachable.__wrapped__  # not the per-process cached answer
    assert probe(f"http://127.0.0.1:{port}", timeout=5)
    server.close()
    assert not probe(f"http://127.0.0.1:{port}", timeout=5)  # refused at once
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.netrc
    monkeypatch.setenv("WANDB_MODE", "online")
    caplog.set_level(logging.WARNING, logger="sarnet")
    assert tracking.choose_mode() == "offline"
    assert len(caplog.records) == 1 and "no API key" in caplog.records[0].message
    caplog.clear()
    monkeypatch.setenv("WANDB_API_KEY", FAKE_KEY)
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.setattr(tracking, "reachable", lambda url: False)
    assert tracking.choose_mode() == "offline"
    assert tracking.choose_mode(offline=True) == "offline"  # the config's choice: nothing to say
    assert len(caplog.records) == 1 and "not reachable" in caplog.records[0].message


def test_run_names_and_sweep_groups(tmp_path):
    assert tracking.run_name({"model": "vae"}, 16, 1234, ["latent_dim=16", "trainer=smoke", "data=mnist"],
                             exclude=["trainer"]) == "vae-L16-s1234 data=mnist"
    assert tracking.run_name({"model": "sarnet"}, 0, 7, ["model=sarnet", "seed=7"]) == "sarnet-s7"
    assert tracking.sweep_group("multirun/2026-11-25/13-01-58") == "2026-11-25/13-01-58"
    assert tracking.sweep_group(tmp_path / "multirun" / "fid_table") == "fid_table"
    assert tracking.sweep_group(tmp_path / "elsewhere") == "elsewhere"


# ---- progress ------------------------------------------------------------------------------------------------

def test_progress_without_a_terminal_is_a_line_every_so_often_with_the_eta(monkeypatch, caplog):
    """nohup, SLURM, CI: no bar but a line every `every` seconds (none in the first `delay`), each with the time
    spent and the time left at the rate so far; results on the way (note) carry them too."""
    now = [0.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: now[0])
    caplog.set_level("INFO", logger="sarnet")
    bar = progress.Progress(100, "FID", every=30, delay=3)
    for _ in range(10):
        now[0] += 10
        bar.update(10)
    bar.note("FID set 1/1: 4.2")
    bar.close()
    quick = progress.Progress(10, "kNN", every=0, delay=3)  # a phase shorter than `delay` says nothing
    now[0] += 2
    quick.update(5)
    assert [r.getMessage() for r in caplog.records] == [
        "FID: 30/100 images (30 s, ~1 min 10 s left)", "FID: 60/100 images (1 min 00 s, ~40 s left)",
        "FID: 90/100 images (1 min 30 s, ~10 s left)", "FID set 1/1: 4.2 (1 min 40 s)"]


# ---- sweeps --------------------------------------------------------------------------------------------------

def test_fid_table_logs_table_and_plot_into_the_sweeps_group(tmp_path):
    sweep = tmp_path / "sweep"
    for i, latent in enumerate((8, 16)):  # two jobs of a sweep, each with its W&B run's id and group
        fake_run(sweep / f"{i}_latent_dim={latent}", "sarnet_vae", latent, 1234, fid=2.0)
        (sweep / f"{i}_latent_dim={latent}" / tracking.RUN_FILE).write_text(
            json.dumps({"id": f"id{latent}", "project": "proj", "group": "my sweep"}))
    for _ in range(2):  # tabulated again (a relaunched sweep): the same W&B run goes on, no second one beside it
        python("scripts/fid_table.py", sweep, "--wandb", timeout=300, check=True)
    first, run_dir = offline_runs(sweep)
    run = read_run(run_dir)
    assert run["group"] == "my sweep" and run["job_type"] == "fid_table" and run["id"] == read_run(first)["id"]
    assert {"fid_table", "fid_plot"} <= run["history"] and run["summary"]["fid/sarnet_vae-L8"] == 2.0
    (plot,) = run_dir.glob("files/media/images/fid_plot_*.png")
    assert np.array_equal(np.asarray(Image.open(plot)), np.asarray(Image.open(sweep / "fid_table.png")))
    (table,) = run_dir.glob("files/media/table/fid_table_*.table.json")
    table = json.loads(table.read_text())
    assert table["columns"][:4] == ["model", "latent_dim", "status", "fid_mean"]
    cells = {(row[0], row[1]): row for row in table["data"]}
    assert cells[("sarnet_vae", 8)][3] == cells[("sarnet_vae", 16)][3] == 2.0
    assert ("vae", 8) not in cells  # no VAE run was given: no VAE rows
