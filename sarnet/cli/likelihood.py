"""Test negative log-likelihood of a checkpoint: nats per image and bits/dim, with a standard error over images.

    sarnet likelihood --ckpt RUN/checkpoints/best.ckpt [--k 5000] [--batch-size 1000] [--seed 0]
        [--max-images N] [--static-dir DIR] [--device auto|cpu|cuda] [--json OUT] [--resume FILE] [--no-progress]
        [--refine-steps S] [--refine-lr LR] [--wandb]

SarNET (strict, first_patch=predicted): the exact NLL, one teacher-forced pass. SarNET-VAE and the conv VAE:
-IWAE_k (an upper bound on the NLL, tighter as k grows; likelihood papers use k = 5000) and the negative ELBO.
The images are the run's test split as its DataModule serves them (dataset, classes, binarization: for
data.binarize=dynamic the fixed evaluation binarization of sarnet/data/binarized.py); --static-dir scores
Larochelle's binarized_mnist_test.amat instead. Prints one JSON object; a progress bar goes to stderr.
Refused with one line: first_patch=given, a non-sigmoid output, non-binary data.
--refine-steps S (VAEs): q(z|x) is the encoder's output refined per test image by S Adam steps on that image's
ELBO before the bounds are drawn from it. The model is the same and the bound still an upper bound on its NLL,
a tighter one (the encoder's amortization gap closed); the output says "refine": {"steps", "lr"}.
--resume FILE keeps the per-image values and the draws' state there (saved every minute): the same command, run
again after an interruption, carries on and gives the result an uninterrupted run would have given.
"""

import json
import time

from sarnet import cli
from sarnet.checkpoint import CheckpointError
from sarnet.data.sources import DataError
from sarnet.io import write_json
from sarnet.settings import MAX_BATCH, MAX_K


def test_images(run: dict, static_dir=None):
    """The run's test split as its DataModule builds it (root resolved as train.py did)."""
    from hydra.utils import instantiate

    if static_dir is not None:
        from sarnet.data.binarized import read_static
        return read_static(static_dir)["test"], "binarized_mnist_test.amat"
    # the data the checkpoint carries; none (not written by train.py): binarized MNIST, all digits
    node = dict(run["data"]["node"] or {"_target_": "sarnet.data.MNISTDataModule", "binarize": "dynamic"})
    node["root"] = run["data"]["root"]
    dm = instantiate(node)
    dm.setup("test")
    what = f"{dm.dataset} test split, classes {dm.classes or 'all'}, binarize={dm.binarize}"
    return dm.test_x, what


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("--ckpt", required=True, type=cli.checkpoint, help=cli.CKPT_HELP +
                   "; a run with eval_ckpt=best (experiment=nll_*) reported its best.ckpt's")
    p.add_argument("--k", type=cli.int_at_least(1, MAX_K, " (papers use 5000)"), default=5000,
                   help="importance samples per image (VAEs; default 5000)")
    p.add_argument("--batch-size", type=cli.int_at_least(1, MAX_BATCH, " (rows per forward pass)"), default=1000,
                   help="rows per forward pass (images x draws)")
    p.add_argument("--seed", type=cli.seed, default=0, help="seeds the q(z|x) draws")
    p.add_argument("--max-images", type=cli.positive_int, default=None, help="score only the first N test images")
    p.add_argument("--static-dir", default=None, help="folder with Larochelle's binarized_mnist_*.amat")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--json", type=cli.writable, default=None, help="also write the result to this file")
    p.add_argument("--resume", type=cli.writable, default=None, metavar="FILE",
                   help="per-image progress file: an interrupted scoring carries on from it (same result)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--refine-steps", type=cli.int_at_least(0), default=0,
                   help="VAEs: Adam steps refining q(z|x) per test image before scoring (default 0: the encoder's)")
    p.add_argument("--refine-lr", type=cli.positive_float, default=None, help="Adam's lr for --refine-steps (default: "
                   "sarnet.likelihood.REFINE_LR)")
    cli.wandb_flag(p)
    args = p.parse_args(argv)
    from sarnet.cli import common  # torch: after the arguments are parsed
    from sarnet.likelihood import REFINE_LR, LikelihoodError, check_density_model, flat_metrics, score

    try:
        model, run, device = common.load_run(args.ckpt, args.device)
        check_density_model(model)  # before reading any data: a given-mode model is refused at once
        x, what = test_images(run, args.static_dir)
        if args.max_images:
            x = x[:args.max_images]
        start = time.perf_counter()
        result = score(model, x, k=args.k, batch_size=args.batch_size, seed=args.seed,
                       progress=not args.no_progress, resume=args.resume, refine_steps=args.refine_steps,
                       refine_lr=args.refine_lr or REFINE_LR)
    except (CheckpointError, cli.UsageError, DataError, LikelihoodError) as e:
        cli.fail(args.prog, e)
    row = {"ckpt": str(args.ckpt), "model": type(model).__name__, "data": what, **result,
           "seed": args.seed, "batch_size": args.batch_size, "seconds": round(time.perf_counter() - start, 2)}
    print(json.dumps(row), flush=True)
    if args.json:
        write_json(args.json, row)
    common.log_wandb("likelihood", args, run, {**flat_metrics(result), "n_images": result["n_images"], "data": what})
    return row

