"""The project on a CUDA machine, in one short call: smoke trainings through train.py (float32, and bf16-mixed with
bf16 sampling and features), fast == naive sampling on the device, bf16 against float32 sampling on the same
draws, and timings of a training epoch, 10,000 samples and one FID set, each in float32, in float32 with TF32
matmuls (CUDA only) and in bf16. One JSON line per check.

    sarnet gpu-check                                      # make gpu-check
    sarnet gpu-check --out docs/results/gpu_check.jsonl   # the lines also written to a file
    sarnet gpu-check --device cpu                         # the same checks on the CPU (CI keeps it working)
"""


import json
import os
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from sarnet import cli
from sarnet.io import atomic_write

LINES = []


def emit(check, **fields):
    LINES.append(json.dumps({"check": check, **fields}))
    print(LINES[-1], flush=True)


def timed(fn, device):
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize()
    t = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return out, time.perf_counter() - t


@contextmanager
def tf32(on: bool):
    """float32 matmuls (and cuDNN convolutions) on the TF32 tensor cores of Ampere+ GPUs while on; off otherwise."""
    import torch

    before = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = on
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = before


def variants(device) -> dict:
    """name -> (sample / fid dtype, trainer.precision, TF32 on): what each timing runs in; TF32 on CUDA only."""
    out = {"float32": ("float32", "32-true", False)}
    if device.type == "cuda":
        out["tf32"] = ("float32", "32-true", True)
    out["bf16"] = ("bfloat16", "bf16-mixed", False)
    return out


def smoke_trains(args, accelerator):
    """train.py end to end on the device: float32, then bf16-mixed training with bf16 sampling and features."""
    runs = {"smoke_train": [], "smoke_train_bf16": ["trainer.precision=bf16-mixed", "sample.dtype=bfloat16",
                                                    "fid.dtype=bfloat16"]}
    for check, extra in runs.items():
        with tempfile.TemporaryDirectory() as tmp:
            env = dict(os.environ, WANDB_MODE="offline", WANDB_SILENT="true")
            cmd = [sys.executable, "-m", "sarnet", "train", "trainer=smoke", f"trainer.accelerator={accelerator}",
                   "logger=csv", f"hydra.run.dir={tmp}/run", f"data_dir={args.data}", *extra]
            t = time.perf_counter()
            proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
            wall = time.perf_counter() - t
            path = Path(tmp, "run", "results.json")
            results = json.loads(path.read_text()) if path.exists() else {}
            fid = results.get("metrics", {}).get("fid/mean")
            recorded = {"precision": results.get("precision"), "sample_dtype": results.get("sampling", {}).get(
                "dtype"), "features_dtype": (results.get("fid_protocol") or {}).get("dtype")}
            emit(check, ok=proc.returncode == 0 and fid is not None, rc=proc.returncode, wall_s=round(wall, 1),
                 fid=fid, **recorded, **({} if proc.returncode == 0 else {"stderr_tail": proc.stderr[-800:]}))


def sampling_checks(model):
    """Exact before fast: the fast sampler reproduces the naive one on this device (TF32 off); bf16 sampling stays
    within BF16_SAMPLE_BOUND of float32 on the same draws."""
    import torch

    from sarnet.sampling import BF16_SAMPLE_BOUND, generate

    with tf32(False):  # TF32 would round the two samplers' matmuls differently
        same = {method: generate(model, 256, method=method, generator=torch.Generator().manual_seed(1))
                for method in ("naive", "fast")}
        bf16 = generate(model, 256, generator=torch.Generator().manual_seed(1), dtype="bfloat16")
    diff = (same["naive"] - same["fast"]).abs().max().item()
    emit("fast_equals_naive", ok=diff <= 1e-5, max_abs_diff=diff, images=256)
    diff = (bf16 - same["fast"]).abs().mean().item()
    emit("bf16_sampling", ok=diff <= BF16_SAMPLE_BOUND, mean_abs_diff=diff, bound=BF16_SAMPLE_BOUND, images=256)


def timings(args, model, device, accelerator):
    """One training epoch (MNIST-5, SarNET-VAE L=128, batch 64), n samples and one FID set, per variant."""
    import torch

    from sarnet.bench import median, project_epochs
    from sarnet.data import real_images
    from sarnet.metrics.fid import FIDEvaluator, load_classifier
    from sarnet.sampling import generate

    epoch, sample, fid = {}, {}, {}
    classifier, real = load_classifier("mnist", args.data), real_images(args.data, "mnist", [5], "test")
    for name, (dtype, precision, tf32_on) in variants(device).items():
        key = "" if name == "float32" else f"{name}_"  # s, tf32_s, bf16_s
        with tf32(tf32_on):
            times = project_epochs(args.data, "sarnet_vae", args.epochs, accelerator, precision)
            epoch[f"{key}s"] = round(median(times), 3)
            draw = lambda n, g, dtype=dtype: generate(model, n, generator=g, batch_size=n, dtype=dtype)  # noqa: E731
            draw(500, torch.Generator().manual_seed(0))  # warm-up
            _, t = timed(lambda: draw(args.n, torch.Generator().manual_seed(0)), device)  # noqa: B023
            sample[f"{key}s"] = round(t, 3)
            evaluator = FIDEvaluator(classifier, real, "test_resampled", n_gen=args.n, n_sets=1, seed=2024,
                                     device=device, dtype=dtype)
            result, t = timed(lambda: evaluator.evaluate(draw), device)  # noqa: B023
            fid[f"{key}s"], fid[f"{key}fid"] = round(t, 3), result["mean"]
    emit("train_epoch", **epoch, epochs_timed=args.epochs - 1)
    emit("sample", **sample, images=args.n, latent_dim=128, patch=4)
    emit("fid_set", **fid, images=args.n)


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("--device", default="cuda")
    p.add_argument("--data", default="data", help="data root (default: ./data, as train.py)")
    p.add_argument("--n", type=int, default=10_000, help="images for the sampling and FID timings")
    p.add_argument("--epochs", type=int, default=3, help="training epochs timed (the first is warm-up)")
    p.add_argument("--out", type=cli.writable, default=None, help="also write the JSON lines to this file (replaced)")
    args = p.parse_args(argv)
    import torch  # after the arguments: --help and usage errors answer at once

    from sarnet import keep_freed_memory
    from sarnet.bench import bf16_units
    from sarnet.nn import SarNetVAE

    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        sys.exit("gpu_check: no CUDA device visible (torch.cuda.is_available() is False); run it on a GPU machine "
                 "or pass --device cpu")
    keep_freed_memory()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    emit("device", device=str(device), name=name, torch=torch.__version__, bf16_units=bf16_units(device))
    accelerator = "gpu" if device.type == "cuda" else "cpu"
    smoke_trains(args, accelerator)
    torch.manual_seed(0)
    model = SarNetVAE(128).to(device).eval()
    sampling_checks(model)
    timings(args, model, device, accelerator)
    if args.out:
        atomic_write(args.out, "".join(line + "\n" for line in LINES).encode())  # its folder made too
