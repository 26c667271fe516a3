"""Reliability harness: bad overrides, random SIGKILLs, corrupted files and disk faults against the real train.py.

    python scripts/torture.py [--kills 3] [--seed 0] [--only overrides,kills,corrupt,faults] [--keep DIR]

Re-runnable: everything happens in a fresh temp dir (or --keep DIR, emptied first). Prints one line per case and
the counts at the end (also as JSON on the last line):
- overrides tried / refused before work (rc != 0, one error line, no traceback, nothing but .hydra, train.log and
  .lock in the run dir) / accepted wrongly;
- kills survived with bit-identical results (metrics, last.ckpt weights and metrics.csv equal to an uninterrupted
  run's, after N random SIGKILLs and a final relaunch);
- corrupted files detected (data, md5 list, best.ckpt, last.ckpt: refused in one line naming the file);
- faults ending in one line (disk full and read-only dirs on a small tmpfs when root, skipped otherwise; SIGTERM;
  a run dir another process holds).
Needs the data (`make data`). Each case is a train.py process: minutes in all on a 2-core CPU.
"""

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "PYTHONPATH": str(ROOT)}
BASE = ["trainer=smoke", "fid=off", "logger=csv", "latent_dim=8"]
RESUMABLE = [*BASE, "trainer.max_epochs=4", "trainer.limit_train_batches=20"]
ERROR = re.compile(r"(?:\[sarnet\]\[ERROR\] - |^)([\w.]+(Error|Busy)): (.*)")
BAD_OVERRIDES = [
    "fid.seed=abc", "callbacks.images.every_n_epochs=0", "callbacks.images.n=0", "callbacks.images.keep_patches=100",
    "callbacks.checkpoint.monitor=val/missing", "loss.ssim_weight=-1", "model.optimizer.lr=0",
    "model.optimizer.lr=-1", "model.optimizer.lr=abc", "trainer.limit_train_batches=0", "model.net.geometry=[]",
    "run_test=maybe", "fid.enabled=maybe", "data.download=maybe", "seed=-1", "seed=4294967296", "seed=abc",
    "data.split_seed=abc", "data.num_workers=-1", "trainer.check_val_every_n_epoch=0", "sample.batch_size=0",
    "latent_dim=0", "trainer.max_epochs=0", "data.classes=[11]", "sample.th=2", "model.beta=-1",
    "eval_ckpt=final", "resume_override_optimizer=yes",
    # beyond the list: every group of fields once more, with the kinds of mistakes people make
    "latent_dim=1.5", "latent_dim=true", "seed=1.5", "trainer.max_epochs=abc", "trainer.limit_val_batches=2.5",
    "trainer.limit_test_batches=-1", "trainer.accelerator=bogus", "trainer.devices=0", "trainer.precision=bogus",
    "data.batch_size=0", "data.classes=[]", "data.quantize=3", "data.binarize=bogus",
    "data.val_size=-0.1", "data.num_workers=abc", "data_dir=/nonexistent", "model.net.geometry=[[28,1,3],[28,1,3]]",
    "model.net.geometry=[[28,1,4],[14,2,2]]", "model.net.first_patch=bogus", "+model.optimizer.momentum=-1",
    "+model.optimizer.weight_decay=-1", "model.beta=abc", "loss=bogus", "model=bogus", "fid.n_gen=1", "fid.n_sets=0",
    "fid.real_set=bogus", "fid.batch_size=0", "fid.extra_th=[2]", "fid.knn.k=0", "fid.knn.n=3", "sample.method=bogus",
    "sample.z_scale=0", "sample.th=-0.1", "sample.mode=bogus", "sample.temperature=0", "sample.batch_size=abc",
    "ckpt_path=/nonexistent.ckpt", "likelihood=default", "likelihood.k=0", "callbacks.images.every_n_epochs=abc",
    "callbacks.checkpoint.mode=bogus", "loss=ce",
]


def train(*overrides, timeout=900, env=None):
    proc = subprocess.run([sys.executable, "train.py", *overrides], cwd=ROOT, env=env or ENV, capture_output=True,
                          text=True, timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def one_line(out: str) -> str | None:
    """The single error line of a refused run, or None if there is none or a traceback came with it."""
    if "Traceback" in out:
        return None
    lines = [m.group(0) for m in map(ERROR.search, out.splitlines()) if m]
    return lines[-1] if len(lines) == 1 else None


def report(kind, ok, what, detail=""):
    print(f"[{'ok' if ok else 'FAIL'}] {kind}: {what}{' -- ' + detail if detail else ''}", flush=True)
    return ok


# ---- bad overrides -------------------------------------------------------------------------------------------

def overrides(work: Path, counts: dict):
    for i, override in enumerate(BAD_OVERRIDES):
        run = work / f"override{i}"
        rc, out = train(*BASE, override, f"hydra.run.dir={run}")
        line = one_line(out)
        # Hydra refuses an unknown group option itself, before train.py's code runs: "In 'config': Could not find
        # 'loss/bogus'" and then the available options. Counted as refused, shown as Hydra's.
        line = line or next((f"Hydra: {x.strip()}" for x in out.splitlines() if "Could not find '" in x), None)
        files = sorted(p.name for p in run.iterdir()) if run.exists() else []
        before_work = set(files) <= {".hydra", "train.log", ".lock"}
        counts["overrides tried"] += 1
        if rc != 0 and line and before_work:
            counts["overrides refused before work"] += 1
            report("override", True, override, line.split(" - ", 1)[-1][:140])
        elif rc == 0:
            counts["overrides accepted wrongly"] += 1
            report("override", False, override, "accepted")
        else:
            report("override", False, override, f"rc {rc}, one line: {bool(line)}, files: {files}")


# ---- random SIGKILLs -----------------------------------------------------------------------------------------

def weights(run: Path):
    return torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]


def same_run(a: Path, b: Path) -> str:
    """'' if runs a and b ended bit-identical (metrics, weights, CSV rows), else what differs."""
    ra, rb = (json.loads((r / "results.json").read_text()) for r in (a, b))
    if ra["metrics"] != rb["metrics"] or ra["steps"] != rb["steps"]:
        return f"metrics {ra['metrics']} != {rb['metrics']}"
    wa, wb = weights(a), weights(b)
    if wa.keys() != wb.keys() or not all(torch.equal(wa[k], wb[k]) for k in wa):
        return "weights differ"
    if (a / "csv" / "metrics.csv").read_text() != (b / "csv" / "metrics.csv").read_text():
        return "metrics.csv differs"
    return ""


def kills(work: Path, counts: dict, n: int, rng: random.Random):
    ref, run = work / "kill_ref", work / "kill_run"
    t0 = time.time()
    rc, out = train(*RESUMABLE, f"hydra.run.dir={ref}")
    if rc:
        report("kill", False, "reference run failed", out[-500:])
        return
    span = time.time() - t0
    for i in range(n):
        # anywhere in the run: start-up, mid-epoch, mid-checkpoint, test; early enough that a resumed run, which
        # has less left to do, is still running
        delay = rng.uniform(0.25, 0.6) * span
        proc = subprocess.Popen([sys.executable, "train.py", *RESUMABLE, f"hydra.run.dir={run}"], cwd=ROOT, env=ENV,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
            report("kill", True, f"kill {i + 1}: the run ended before its kill at {delay:.1f} s")
        except subprocess.TimeoutExpired:
            os.kill(proc.pid, signal.SIGKILL)
            proc.wait()
            counts["kills"] += 1
            print(f"       kill {i + 1}: SIGKILL after {delay:.1f} s", flush=True)
    (run / "results.json").unlink(missing_ok=True)  # a kill during test may follow a finished earlier relaunch
    rc, out = train(*RESUMABLE, f"hydra.run.dir={run}")
    diff = same_run(ref, run) if rc == 0 else f"final relaunch failed: {out[-800:]}"
    if report("kill", not diff, f"{counts['kills']} kills, then resumed to the end", diff or "bit-identical"):
        counts["kills survived bit-identical"] += counts["kills"]


# ---- corrupted files -----------------------------------------------------------------------------------------

def flip(path: Path, where=0.5):
    data = bytearray(path.read_bytes())
    data[int(len(data) * where)] ^= 0x5A
    path.unlink()  # a symlinked data file: replace the link, never the shared original
    path.write_bytes(bytes(data))


def data_copy(work: Path, name: str, manifest: bool) -> Path:
    root = work / name
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    for p in (ROOT / "data" / "MNIST" / "raw").iterdir():
        if manifest or p.name != ".sarnet-ok.json":
            (raw / p.name).symlink_to(p.resolve())
    return raw


def corrupt(work: Path, counts: dict):
    finished = work / "finished"
    rc, out = train(*BASE, f"hydra.run.dir={finished}")
    if rc:
        report("corrupt", False, "reference run failed", out[-500:])
        return
    cases = []
    for manifest in (True, False):
        raw = data_copy(work, f"data_{'md5' if manifest else 'nomd5'}", manifest)
        flip(raw / "train-labels-idx1-ubyte", 0.7)
        cases.append((f"train labels, {'with' if manifest else 'without'} md5 list", raw / "train-labels-idx1-ubyte",
                      [f"data_dir={raw.parent.parent}"], work / f"run_data_{manifest}"))
    raw = data_copy(work, "data_garbage", True)
    (raw / ".sarnet-ok.json").unlink()
    (raw / ".sarnet-ok.json").write_text("{garbage")
    cases.append(("md5 list", raw / ".sarnet-ok.json", [f"data_dir={raw.parent.parent}"], work / "run_garbage"))
    for name in ("best", "last"):
        for how in ("bitflip", "truncated"):
            run = work / f"run_{name}_{how}"
            shutil.copytree(finished, run)
            path = run / "checkpoints" / f"{name}.ckpt"
            if how == "truncated":
                path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
            else:
                flip(path)
            cases.append((f"{name}.ckpt {how}", path, ["trainer.max_epochs=2"], run))
    for what, path, extra, run in cases:
        rc, out = train(*BASE, *extra, f"hydra.run.dir={run}")
        line = one_line(out)
        detected = rc != 0 and line is not None and str(path) in line
        counts["corrupted files"] += 1
        counts["corrupted files detected"] += detected
        report("corrupt", detected, what, (line or out[-300:]).split(" - ", 1)[-1][:160])


# ---- faults --------------------------------------------------------------------------------------------------

def mount_tmpfs(path: Path, size: str, ro=False) -> bool:
    path.mkdir(parents=True, exist_ok=True)
    opts = f"size={size}" + (",ro" if ro else "")
    return os.geteuid() == 0 and subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)],
                                                 capture_output=True).returncode == 0


def fault(counts, what, rc, out, expect, run=None):
    line = one_line(out)
    good = rc != 0 and line is not None and expect in line and (run is None or not (run / "results.json").exists())
    counts["faults"] += 1
    counts["faults in one line"] += good
    report("fault", good, what, (line or out[-300:]).split(" - ", 1)[-1][:160])


def faults(work: Path, counts: dict):
    mounts = []
    try:
        full = work / "full"
        if mount_tmpfs(full, "3m"):  # room for .hydra and the logs, not for a checkpoint
            mounts.append(full)
            rc, out = train(*BASE, f"hydra.run.dir={full}/run")
            fault(counts, "disk full at the first checkpoint", rc, out, "No space left on device", full / "run")
        else:
            print("[skip] fault: disk full (needs root to mount a tmpfs)")
        ro = work / "ro_run"
        if mount_tmpfs(ro / "checkpoints", "1m", ro=True):
            mounts.append(ro / "checkpoints")
            rc, out = train(*BASE, f"hydra.run.dir={ro}")
            fault(counts, "read-only checkpoints dir", rc, out, "Read-only file system", ro)
            ro = work / "ro_all"
            if mount_tmpfs(ro, "1m", ro=True):
                mounts.append(ro)
                rc, out = train(*BASE, f"hydra.run.dir={ro}/run")
                fault(counts, "read-only run dir", rc, out, "Read-only file system")
        else:
            print("[skip] fault: read-only dir (needs root to mount a tmpfs)")
    finally:
        for m in mounts:
            subprocess.run(["umount", str(m)], check=False)
    run = work / "sigterm"
    rc, out = train(*BASE, f"hydra.run.dir={run}", "+callbacks.fault._target_=tests.faults.SigtermAtStart")
    fault(counts, "SIGTERM", rc, out, "stopped by SIGTERM", run)
    run = work / "busy"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from sarnet.rundir import lock_run_dir; "
                               "lock_run_dir(sys.argv[1]); print('ok', flush=True); time.sleep(600)", str(run)],
                              cwd=ROOT, env=ENV, stdout=subprocess.PIPE, text=True)
    try:
        holder.stdout.readline()
        rc, out = train(*BASE, f"hydra.run.dir={run}")
        fault(counts, "run dir held by another live process", rc, out, f"pid {holder.pid}", run)
    finally:
        holder.kill()
        holder.wait()


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", default="overrides,kills,corrupt,faults")
    p.add_argument("--keep", default=None, help="work here (emptied first) instead of a temp dir")
    args = p.parse_args()
    if not (ROOT / "data" / "MNIST" / "raw" / ".sarnet-ok.json").exists():
        sys.exit("torture.py: run `make data` first")
    work = Path(args.keep or tempfile.mkdtemp(prefix="sarnet-torture-"))
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    counts = dict.fromkeys(["overrides tried", "overrides refused before work", "overrides accepted wrongly", "kills",
                            "kills survived bit-identical", "corrupted files", "corrupted files detected", "faults",
                            "faults in one line"], 0)
    steps = {"overrides": lambda: overrides(work, counts), "kills": lambda: kills(work, counts, args.kills,
                                                                                   random.Random(args.seed)),
             "corrupt": lambda: corrupt(work, counts), "faults": lambda: faults(work, counts)}
    for name in args.only.split(","):
        steps[name]()
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    for k, v in counts.items():
        print(f"{k}: {v}")
    print(json.dumps(counts))
    pairs = [("overrides tried", "overrides refused before work"), ("kills", "kills survived bit-identical"),
             ("corrupted files", "corrupted files detected"), ("faults", "faults in one line")]
    sys.exit(1 if counts["overrides accepted wrongly"] or any(counts[a] != counts[b] for a, b in pairs) else 0)


if __name__ == "__main__":
    main()
