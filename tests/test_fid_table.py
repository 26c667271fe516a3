"""scripts/fid_table.py on a small fabricated multirun dir: aggregation over seeds, missing and failed cells."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def fake_run(dir, model, latent, seed, fid=None, status="ok"):
    dir.mkdir(parents=True)
    r = {"status": status, "model": model, "latent_dim": latent, "seed": seed}
    if status == "ok":
        r |= {"epochs": 200, "params": {"dense": 2_958_648, "effective": 1_898_808}, "wall_time_s": 360.0,
              "metrics": {"fid/mean": fid, "fid/std": 0.1, "test/loss": 101.5}}
    else:
        r["error"] = "ConfigError: latent_dim=0 is invalid"
    (dir / "results.json").write_text(json.dumps(r))


def test_fid_table_aggregates_seeds_and_marks_missing_cells(tmp_path):
    sweep = tmp_path / "multirun" / "2026-11-25" / "10-00-00"
    fake_run(sweep / "0_a", "sarnet_vae", 128, 1234, fid=1.0)
    fake_run(sweep / "1_b", "sarnet_vae", 128, 1235, fid=2.0)
    fake_run(sweep / "2_c", "vae", 64, 1234, fid=1.5)
    fake_run(sweep / "3_d", "vae", 8, 1234, status="failed")
    fake_run(sweep / "4_e", "sarnet", None, 1234, fid=30.0)
    out = tmp_path / "table"
    proc = subprocess.run([sys.executable, "scripts/fid_table.py", str(sweep), "--out", str(out)], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    rows = {(r["model"], r["latent_dim"]): r for r in json.loads(out.with_suffix(".json").read_text())}
    two_seeds = rows[("sarnet_vae", 128)]
    assert two_seeds["fid_mean"] == 1.5 and two_seeds["fid_std"] == 0.5 and two_seeds["seeds"] == [1234, 1235]
    assert rows[("vae", 64)]["fid_std"] == 0.1  # one seed: the std over FID sets
    assert rows[("vae", 8)]["status"] == "failed" and rows[("sarnet_vae", 16)]["status"] == "missing"
    assert rows[("sarnet", None)]["fid_mean"] == 30.0
    md = out.with_suffix(".md").read_text()
    assert "| 200 | best |" in md and "1.500 ± 0.500" in md and "1.535" in md
    assert "— (failed)" in md and "— (missing)" in md
    assert out.with_suffix(".png").stat().st_size > 5000


def test_fid_table_rejects_a_missing_dir(tmp_path):
    proc = subprocess.run([sys.executable, "scripts/fid_table.py", str(tmp_path / "nope")], cwd=ROOT,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "is not a directory" in proc.stderr


def test_fid_table_logs_a_wandb_table_offline(tmp_path):
    sweep = tmp_path / "sweep"
    fake_run(sweep / "0_a", "sarnet_vae", 8, 1234, fid=2.0)
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true"}
    proc = subprocess.run([sys.executable, "scripts/fid_table.py", str(sweep), "--out", str(tmp_path / "t"),
                           "--wandb"], cwd=ROOT, capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    tables = list(sweep.glob("wandb/offline-run-*/files/media/table/fid_table_*.table.json"))
    assert len(tables) == 1, sorted(p.relative_to(sweep) for p in sweep.rglob("*"))[:40]
    table = json.loads(tables[0].read_text())
    assert table["columns"][:4] == ["model", "latent_dim", "status", "fid_mean"]
    cells = {(row[0], row[1]): row for row in table["data"]}
    assert cells[("sarnet_vae", 8)][3] == 2.0 and cells[("vae", 8)][2] == "missing"
