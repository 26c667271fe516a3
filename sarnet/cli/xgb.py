"""Generative XGBoost (sarnet/xgb.py): train on MNIST fives, generate, score FID and kNN like the SarNET runs.

    sarnet xgb [--out runs/xgb] [--rounds 50] [--depth 7] [--refine-rounds 40] [--refine-depth 6]
        [--order raster|column] [--threads N] [--seed 0] [--max-patches K] [--train-images N]
        [--n-gen N] [--n-sets N] [--model DIR] [--data data]

Writes <out>/model/ (xgboost UBJ files + meta.json), <out>/samples.png (64 samples) and <out>/results.json:
settings, training wall time, FID mean/std/values with its protocol, kNN real-vs-fake accuracy. The FID protocol
is conf/fid/default.yaml's (--n-gen / --n-sets shrink it for a quick look; --n-sets 0 skips FID and kNN).
--model DIR scores an already trained model instead of training one. Progress goes to stderr. Each patch's
boosters are kept in <out>/model.partial/ as they are trained: an interrupted run, launched again with the same
settings, resumes there (the model equals an uninterrupted run's); the folder goes once <out>/model/ is saved.
Quick run: sarnet xgb --out /tmp/xgb --max-patches 20 --train-images 500 --n-gen 500 --n-sets 1
"""

import io
import os
import shutil
import sys
import time
from pathlib import Path

from sarnet import cli, packaged_config
from sarnet.io import atomic_write, write_json

PARTIAL = "model.partial"  # <out>/model.partial: the patches trained so far, where a relaunch resumes


def say(fmt: str, *args):
    print(fmt % args, file=sys.stderr, flush=True)


def parse(argv=None, prog=None):
    from sarnet.xgb import NEXT_PARAMS, ORDERS, REFINE_PARAMS

    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("--out", type=lambda a: cli.writable(a, folder=True), default="runs/xgb",
                   help="output folder (default runs/xgb)")
    p.add_argument("--rounds", type=cli.positive_int, default=NEXT_PARAMS["rounds"], help="boosting rounds of each "
                   "next-patch model (the reference: 50)")
    p.add_argument("--depth", type=cli.positive_int, default=NEXT_PARAMS["max_depth"], help="their tree depth (7)")
    p.add_argument("--refine-rounds", type=cli.positive_int, default=REFINE_PARAMS["rounds"], help="(40)")
    p.add_argument("--refine-depth", type=cli.positive_int, default=REFINE_PARAMS["max_depth"], help="(6)")
    p.add_argument("--order", choices=ORDERS, default="raster", help="patch order; 'column' = the reference's")
    p.add_argument("--threads", type=cli.positive_int, default=os.cpu_count(), help="xgboost and torch threads "
                   "(default: all cores)")
    p.add_argument("--seed", type=cli.seed, default=0, help="training seed and the seed of the sample grid")
    p.add_argument("--max-patches", type=cli.positive_int, default=None, help="train patches 1..K only (a quick "
                   "run; later patches stay blank)")
    p.add_argument("--train-images", type=cli.positive_int, default=None, help="use the first N training fives")
    p.add_argument("--n-gen", type=cli.int_at_least(2), default=None, help="images per FID set (default: "
                   "conf/fid/default.yaml's)")
    p.add_argument("--n-sets", type=cli.int_at_least(0), default=None, help="FID sets; 0 = no FID and no kNN")
    p.add_argument("--model", default=None, help="score this trained model folder instead of training")
    p.add_argument("--data", default="data", help="data root prepared by `make data` (default data)")
    args = p.parse_args(argv)
    if args.max_patches is not None and args.max_patches > 195:
        p.error(f"--max-patches {args.max_patches}: at most 195 (patch 0 is given); leave it out to train all")
    if args.model and (args.max_patches or args.train_images):
        p.error("--model scores a trained model: leave out --max-patches and --train-images")
    return args


def train(args):
    from sarnet.data import DataError, real_images
    from sarnet.xgb import GenerativeXGB

    try:
        images = real_images(args.data, "mnist", [5], "train")
    except (OSError, DataError) as e:
        raise cli.UsageError(f"cannot read the MNIST training fives: {e}") from e
    images = images[:args.train_images]
    t0 = time.time()

    def progress(k, last, seconds):
        say("patch %d/%d: %.1f s (elapsed %.0f s)", k, last, seconds, time.time() - t0)

    say("training on %d fives, %s order, %d threads", len(images), args.order, args.threads)
    model = GenerativeXGB.train(images, order=args.order, max_patches=args.max_patches, rounds=args.rounds,
                                depth=args.depth, refine_rounds=args.refine_rounds, refine_depth=args.refine_depth,
                                threads=args.threads, seed=args.seed, progress=progress,
                                resume_dir=Path(args.out) / PARTIAL)
    wall = model.meta["train_s"]  # every launch's training: an interrupted run resumes from <out>/model.partial
    say("trained %d patch models in %.0f s", model.meta["trained_patches"], wall)
    return model, wall


def score(model, args):
    """FID (conf/fid/default.yaml's protocol, --n-gen / --n-sets applied) and the kNN accuracy."""
    from sarnet.data import DataError
    from sarnet.evaluate import evaluate_knn
    from sarnet.metrics.fid import FIDEvaluator

    fid_cfg = packaged_config("fid/default")
    for key in ("n_gen", "n_sets"):
        if getattr(args, key) is not None:
            fid_cfg[key] = getattr(args, key)
    if fid_cfg.n_sets == 0:
        return None, None
    fid_cfg.batch_size = min(fid_cfg.batch_size, fid_cfg.n_gen)
    say("FID: %d sets of %d images vs %s", fid_cfg.n_sets, fid_cfg.n_gen, fid_cfg.real_set)
    try:
        evaluator = FIDEvaluator.from_dataset("mnist", classes=[5], real_set=fid_cfg.real_set, root=args.data,
                                              n_gen=fid_cfg.n_gen, n_sets=fid_cfg.n_sets, seed=fid_cfg.seed,
                                              batch_size=fid_cfg.batch_size, device="cpu")
    except (OSError, DataError) as e:
        raise cli.UsageError(f"cannot read the MNIST test fives: {e}") from e
    fid = evaluator.evaluate(model.generate, lambda line: say("%s", line)) | {"protocol": evaluator.protocol()}
    knn = None
    if fid_cfg.knn.n:
        knn = evaluate_knn(evaluator.real_images, model.generate, fid_cfg, lambda line: say("%s", line))
    return fid, knn


def main(argv=None, prog=None):
    args = parse(argv, prog)
    import torch  # after the arguments: --help and usage errors answer at once
    from torchvision.utils import make_grid, save_image

    out = Path(args.out)
    torch.set_num_threads(args.threads)
    try:
        from sarnet.xgb import GenerativeXGB, XGBError

        try:
            if args.model:
                model, wall = GenerativeXGB.load(args.model, threads=args.threads), None
            else:
                model, wall = train(args)
                model.save(out / "model")
                shutil.rmtree(out / PARTIAL)  # the whole model is saved: the per-patch copies are not needed
            grid = make_grid(model.generate(64, args.seed), nrow=8)
            png = io.BytesIO()
            save_image(grid, png, format="png")
            atomic_write(out / "samples.png", png.getvalue())
            t0 = time.time()
            fid, knn = score(model, args)
        except XGBError as e:
            raise cli.UsageError(str(e)) from e
    except cli.UsageError as e:
        cli.fail(args.prog, e)
    result = {"model": str(args.model or out / "model"), "settings": model.meta, "threads": args.threads,
              "train_wall_s": wall, "score_wall_s": time.time() - t0,
              "fid_mean": fid and fid["mean"], "fid_std": fid and fid["std"], "fid_values": fid and fid["values"],
              "fid_protocol": fid and fid["protocol"], "knn": knn}
    write_json(out / "results.json", result)
    say("results -> %s (FID %s, kNN %s)", out / "results.json",
        "-" if fid is None else f"{fid['mean']:.3f} ± {fid['std']:.3f}",
        "-" if knn is None else f"{knn['accuracy']:.4g}")
    return result

