"""FID of a trained checkpoint at its run's sampling settings, or over a grid of them (threshold, z scale).

    sarnet fid --ckpt RUN/checkpoints/last.ckpt [--th 0,0.05,0.105,none] [--z-scale 1.0,0.8]
        [--n-gen 10000] [--n-sets 10] [--real-set test_resampled|train|test] [--seed 2024] [--json OUT]
        [--device auto|cpu|cuda] [--wandb]

Prints one JSON object per setting: {"ckpt", "th", "z_scale", "n_gen", "n_sets", "real_set", "fid_mean",
"fid_std", "fid_values"}. The protocol defaults are the run's `fid` config, which the checkpoint carries (else
conf/fid/default.yaml's: the reference's 10 sets of 10,000 images against the resampled test set, seed 2024).
Every setting is scored with the same seed, so the same z draws and real sets: differences between settings are
not sampling noise of the protocol. --wandb: a run beside the training run's, summary fid/mean and fid/std.
"""

import json
import sys

from sarnet import cli, packaged_config
from sarnet.checkpoint import CheckpointError
from sarnet.cli import common
from sarnet.config import REAL_SETS
from sarnet.io import atomic_write
from sarnet.sampling import sample_images

# The protocol's defaults are conf/fid/default.yaml's, for checkpoints whose run config is not found beside them.
PROTOCOL_KEYS = ("n_gen", "n_sets", "real_set", "seed", "batch_size")


def progress(fmt: str, *args):
    """On stderr: stdout holds only the JSON lines."""
    print(fmt % args, file=sys.stderr, flush=True)


def floats(s: str):
    return [float(v) for v in s.split(",")]


def thresholds(s: str):
    return [cli.threshold(v) for v in s.split(",")]


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("--ckpt", required=True, help="checkpoint written by train.py (<run>/checkpoints/*.ckpt)")
    p.add_argument("--th", type=thresholds, default=None, help="comma list; 'none' = no threshold "
                   "(default: the run's sample.th)")
    p.add_argument("--z-scale", type=floats, default=None, help="comma list (default: the run's sample.z_scale)")
    p.add_argument("--n-gen", type=int, default=None)
    p.add_argument("--n-sets", type=int, default=None)
    p.add_argument("--real-set", choices=REAL_SETS, default=None)
    p.add_argument("--seed", type=int, default=None, help="evaluation seed (default: the run's fid.seed)")
    p.add_argument("--json", default=None, help="also write the list of results to this file")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    cli.wandb_flag(p)
    args = p.parse_args(argv)
    try:
        from sarnet.data import DataError
        from sarnet.metrics.fid import FIDEvaluator

        model, run, device = common.load_run(args.ckpt, args.device)
        fid_cfg = run["fid"] or packaged_config("fid/default")
        protocol = {k: fid_cfg[k] for k in PROTOCOL_KEYS}
        given = {"n_gen": args.n_gen, "n_sets": args.n_sets, "real_set": args.real_set, "seed": args.seed}
        protocol.update({k: v for k, v in given.items() if v is not None})
        if protocol["n_gen"] < 2 or protocol["n_sets"] < 1:
            raise cli.UsageError(f"--n-gen {protocol['n_gen']} / --n-sets {protocol['n_sets']}: FID needs "
                                 f"n_gen >= 2 and n_sets >= 1")
        data = run["data"]
        progress("FID: %d sets of %d images vs %s", protocol["n_sets"], protocol["n_gen"], protocol["real_set"])
        try:
            evaluator = FIDEvaluator.from_dataset(data["dataset"], classes=data["classes"], root=data["root"],
                                                  device=device, **protocol)
        except (OSError, DataError) as e:
            raise cli.UsageError(f"cannot read the {data['dataset']} data under {data['root']}: {e} "
                                 f"(prepare it with `make data`)") from e
        results = []
        settings = [(th, z) for th in args.th or [None] for z in args.z_scale or [None]]
        for i, (th, z_scale) in enumerate(settings):
            cfg = dict(run["sample"])
            cfg["th"] = common.resolve_th(th, run)
            if z_scale is not None:
                cfg["z_scale"] = z_scale
            label = f"setting {i + 1}/{len(settings)} (th={cfg['th']}, z_scale={cfg.get('z_scale', 1.0)}):"
            fid = evaluator.evaluate(lambda n, generator, cfg=cfg: sample_images(model, n, cfg, generator),
                                     lambda line, label=label: progress("%s %s", label, line))
            row = {"ckpt": str(args.ckpt), "th": cfg["th"], "z_scale": cfg.get("z_scale", 1.0),
                   **{k: protocol[k] for k in ("n_gen", "n_sets", "real_set")},
                   "fid_mean": fid["mean"], "fid_std": fid["std"], "fid_values": fid["values"]}
            print(json.dumps(row), flush=True)
            results.append(row)
    except (CheckpointError, cli.UsageError) as e:
        cli.fail("fid", e)
    if args.json:
        atomic_write(args.json, (json.dumps(results, indent=1) + "\n").encode())  # never a half-written file
    # one setting: fid/mean as in the training run's summary; a grid: fid@th=..,z_scale=../mean per setting
    keys = ["fid"] if len(results) == 1 else [f"fid@th={r['th']},z_scale={r['z_scale']}" for r in results]
    scores = {f"{key}/{stat}": r[f"fid_{stat}"] for key, r in zip(keys, results) for stat in ("mean", "std")}
    common.log_wandb("fid", args, run, {**protocol, **scores})
    return results

