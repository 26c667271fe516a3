"""The project on a CUDA machine, in one short call: a smoke training through train.py, fast == naive sampling on
the device, and timings of a training epoch, 10,000 samples and one FID set. One JSON line per check.

    sarnet gpu-check                 # make gpu-check
    sarnet gpu-check --device cpu    # the same checks on the CPU (CI runs it so that it keeps working)
"""


import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from sarnet import cli


def emit(check, **fields):
    print(json.dumps({"check": check, **fields}), flush=True)


def timed(fn, device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", default="data", help="data root (default: ./data, as train.py)")
    p.add_argument("--n", type=int, default=10_000, help="images for the sampling and FID timings")
    p.add_argument("--epochs", type=int, default=3, help="training epochs timed (the first is warm-up)")
    args = p.parse_args(argv)
    import torch  # after the arguments: --help and usage errors answer at once

    from sarnet.bench import project_epochs
    from sarnet.nn import SarNetVAE
    from sarnet.sampling import generate

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU machine "
                 "or pass --device cpu")
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit("device", device=str(device), name=name, torch=torch.__version__)

    # 1. the real entry point, end to end, on the accelerator
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    with tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
        cmd = [sys.executable, "-m", "sarnet", "train", "trainer=smoke", f"trainer.accelerator={accelerator}",
               "logger=csv", f"hydra.run.dir={tmp}/run", f"data_dir={args.data}"]
        proc, wall = timed(lambda: subprocess.run(cmd, env=env, capture_output=True, text=True), device)
        results = Path(tmp, "run", "results.json")
        fid = json.loads(results.read_text())["metrics"].get("fid/mean") if results.exists() else None
        emit("smoke_train", ok=proc.returncode == 0 and fid is not None, rc=proc.returncode, wall_s=round(wall, 1),
             fid=fid, **({} if proc.returncode == 0 else {"stderr_tail": proc.stderr[-800:]}))

    # 2. exact before fast: the fast sampler reproduces the naive one on this device
    torch.backends.cuda.matmul.allow_tf32 = False  # TF32 would round the two samplers' matmuls differently
    torch.manual_seed(0)
    model = SarNetVAE(128).to(device).eval()
    same = {}
    for method in ("naive", "fast"):
        same[method] = generate(model, 256, method=method, generator=torch.Generator().manual_seed(1))
    diff = (same["naive"] - same["fast"]).abs().max().item()
    emit("fast_equals_naive", ok=diff <= 1e-5, max_abs_diff=diff, images=256)

    # 3. timings: one training epoch (MNIST-5, SarNET-VAE L=128, batch 64), n samples, one FID set
    times = project_epochs(args.data, "sarnet_vae", args.epochs, accelerator)
    emit("train_epoch", s=round(sorted(times[1:])[len(times[1:]) // 2], 3), epochs_timed=len(times) - 1)
    generate(model, 500, generator=torch.Generator().manual_seed(0))  # warm-up
    _, t = timed(lambda: generate(model, args.n, batch_size=args.n, generator=torch.Generator().manual_seed(0)),
                 device)
    emit("sample", s=round(t, 3), images=args.n, latent_dim=128, patch=4)
    from sarnet.data import real_images
    from sarnet.metrics.fid import FIDEvaluator, load_classifier
    evaluator = FIDEvaluator(load_classifier("mnist", args.data), real_images(args.data, "mnist", [5], "test"),
                             "test_resampled", n_gen=args.n, n_sets=1, seed=2024, device=device)
    result, t = timed(lambda: evaluator.evaluate(lambda n, g: generate(model, n, generator=g, batch_size=n)), device)
    emit("fid_set", s=round(t, 3), images=args.n, fid=result["mean"])

