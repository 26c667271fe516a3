"""FID of a trained checkpoint at its run's sampling settings, or over a grid of them (threshold, z scale).

    sarnet fid --ckpt RUN/checkpoints/last.ckpt [--th 0,0.05,0.105,none] [--z-scale 1.0,0.8]
        [--dtype float32,bfloat16] [--features-dtype float32|bfloat16] [--n-gen 10000] [--n-sets 10]
        [--real-set test_resampled|train|test] [--seed 2024] [--json OUT] [--device auto|cpu|cuda] [--wandb]

Prints one JSON object per setting: {"ckpt", "th", "z_scale", "dtype", "n_gen", "n_sets", "real_set",
"features_dtype", "fid_mean", "fid_std", "fid_values"}. The protocol defaults are the run's `fid` config, which the
checkpoint carries (else conf/fid/default.yaml's: the reference's 10 sets of 10,000 images against the resampled
test set, seed 2024). Every setting is scored with the same seed, so the same z draws and real sets: differences
between settings are not sampling noise of the protocol (--dtype float32,bfloat16: float32 and bf16 sampling on the
same draws). --wandb: a run beside the training run's, summary fid/mean and fid/std.
"""

import argparse
import json
import sys

from sarnet import cli, packaged_config
from sarnet.checkpoint import CheckpointError
from sarnet.config import FID_IMAGES_CAP, FID_IMAGES_PER_S
from sarnet.fields import REAL_SETS
from sarnet.io import write_json
from sarnet.settings import DTYPES, th_text

# The protocol's defaults are conf/fid/default.yaml's, for checkpoints whose run config is not found beside them.
PROTOCOL_KEYS = ("n_gen", "n_sets", "real_set", "seed", "batch_size", "dtype")


def progress(fmt: str, *args):
    """On stderr: stdout holds only the JSON lines."""
    print(fmt % args, file=sys.stderr, flush=True)


def floats(s: str):
    return [cli.positive_float(v) for v in s.split(",")]


def dtypes(s: str):
    if bad := [v for v in s.split(",") if v not in DTYPES]:
        raise argparse.ArgumentTypeError(f"{bad}: choose from {list(DTYPES)}")
    return s.split(",")


def thresholds(s: str):
    return [cli.threshold(v) for v in s.split(",")]


def parser(prog):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("--ckpt", required=True, type=cli.checkpoint, help=cli.CKPT_HELP)
    p.add_argument("--th", type=thresholds, default=None, help="comma list; 'none' = no threshold "
                   "(default: the run's sample.th)")
    p.add_argument("--z-scale", type=floats, default=None, help="comma list (default: the run's sample.z_scale)")
    p.add_argument("--dtype", type=dtypes, default=None, help="comma list of sampling dtypes (default: the run's "
                   "sample.dtype)")
    p.add_argument("--features-dtype", choices=DTYPES, default=None, help="the LeNet features' dtype (default: the "
                   "run's fid.dtype)")
    p.add_argument("--n-gen", type=cli.int_at_least(2), default=None, help="images per set (default: the run's)")
    p.add_argument("--n-sets", type=cli.positive_int, default=None, help="sets (default: the run's)")
    p.add_argument("--real-set", choices=REAL_SETS, default=None)
    p.add_argument("--seed", type=cli.seed, default=None, help="evaluation seed (default: the run's fid.seed)")
    p.add_argument("--json", type=cli.writable, default=None, help="also write the list of results to this file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    cli.wandb_flag(p)
    return p


def protocol_of(args, run) -> dict:
    """The run's FID protocol, the flags given over it."""
    fid_cfg = run["fid"] or packaged_config("fid/default")
    protocol = {k: fid_cfg.get(k, "float32" if k == "dtype" else None) for k in PROTOCOL_KEYS}
    given = {"n_gen": args.n_gen, "n_sets": args.n_sets, "real_set": args.real_set, "seed": args.seed,
             "dtype": args.features_dtype}
    return protocol | {k: v for k, v in given.items() if v is not None}


def main(argv=None, prog=None):
    args = parser(prog).parse_args(argv)
    from sarnet import keep_freed_memory
    from sarnet.cli import common  # torch: after the arguments are parsed
    from sarnet.data import DataError
    from sarnet.metrics.fid import FIDEvaluator
    from sarnet.sampling import sample_images
    from sarnet.settings import SampleSettings

    keep_freed_memory()
    try:
        model, run, device = common.load_run(args.ckpt, args.device, args.z_scale)
        protocol = protocol_of(args, run)
        grid = [SampleSettings.of(run["sample"], z_scale=z, dtype=d) | {"th": common.resolve_th(th, run)}
                for th in args.th or [None] for z in args.z_scale or [None] for d in args.dtype or [None]]
        images = protocol["n_gen"] * protocol["n_sets"] * len(grid)
        if images > FID_IMAGES_CAP:
            raise cli.UsageError(f"{images:.3g} images to generate (n_gen x n_sets x settings): at most "
                                 f"{FID_IMAGES_CAP:.0e}, about {FID_IMAGES_CAP / FID_IMAGES_PER_S / 3600:.0f} h at "
                                 f"{FID_IMAGES_PER_S} images/s (the fast sampler on one CPU thread)")
        data = run["data"]
        progress("FID: %d sets of %d images vs %s", protocol["n_sets"], protocol["n_gen"], protocol["real_set"])
        evaluator = FIDEvaluator.from_dataset(data["dataset"], classes=data["classes"], root=data["root"],
                                              device=device, **protocol)
        results = []
        for i, s in enumerate(grid):
            label = f"setting {i + 1}/{len(grid)} (th={th_text(s.th)}, z_scale={s.z_scale}, dtype={s.dtype}):"
            fid = evaluator.evaluate(lambda n, generator, s=s: sample_images(model, n, s, generator),
                                     lambda line, label=label: progress("%s %s", label, line))
            row = {"ckpt": str(args.ckpt), "th": s.th, "z_scale": s.z_scale, "dtype": s.dtype,
                   **{k: protocol[k] for k in ("n_gen", "n_sets", "real_set")}, "features_dtype": protocol["dtype"],
                   "fid_mean": fid["mean"], "fid_std": fid["std"], "fid_values": fid["values"]}
            print(json.dumps(row), flush=True)
            results.append(row)
    except (CheckpointError, cli.UsageError, DataError, ValueError) as e:  # ValueError: a setting the sampler refuses
        cli.fail(args.prog, e)
    if args.json:
        write_json(args.json, results)
    # one setting: fid/mean as in the training run's summary; a grid: fid@th=..,z_scale=..[,dtype=..]/mean per setting
    keys = ["fid"] if len(results) == 1 else [f"fid@th={th_text(r['th'])},z_scale={r['z_scale']}" +
                                              (f",dtype={r['dtype']}" if args.dtype else "") for r in results]
    scores = {f"{key}/{stat}": r[f"fid_{stat}"] for key, r in zip(keys, results) for stat in ("mean", "std")}
    common.log_wandb("fid", args, run, {**protocol, **scores})
    return results
