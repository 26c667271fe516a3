"""Train the FID feature network (TF-slim's LeNet) with slim's MNIST recipe, from scratch.

    sarnet train-classifier --dataset mnist --threads 1            # re-make the shipped MNIST weights
    sarnet train-classifier --dataset fashion_mnist --threads 1    # re-make the shipped FashionMNIST weights
    sarnet train-classifier --steps 40000 --snapshots 10000 20000 --out-dir variants/   # a study

Without --out-dir the weights go where load_classifier looks (the shipped file for MNIST and FashionMNIST,
<root>/classifiers/ otherwise); their sha256 is printed (a shipped file's must then be pinned in
sarnet/metrics/fid.py's SHIPPED_SHA256).
"""

import json
import sys
from pathlib import Path

from sarnet import cli
from sarnet.data.sources import FOLDERS


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("--dataset", choices=list(FOLDERS), default="mnist")
    p.add_argument("--root", default="data")
    p.add_argument("--steps", type=cli.positive_int, default=None, help="default: the shipped weights' recipe "
                   "(sarnet.metrics.fid.RECIPE)")
    p.add_argument("--seed", type=cli.seed, default=None, help="default: the recipe's")
    p.add_argument("--no-dropout", action="store_true", help="train without slim's dropout3 (a variant)")
    p.add_argument("--snapshots", type=cli.positive_int, nargs="*", default=[], help="also save the weights at "
                   "these steps")
    p.add_argument("--out-dir", type=lambda a: cli.writable(a, folder=True), default=None,
                   help="save <out-dir>/lenet_<dataset>_s<seed>[_nodrop]_<step>.pt")
    p.add_argument("--threads", type=cli.positive_int, default=2)
    args = p.parse_args(argv)
    if args.steps and any(s >= args.steps for s in args.snapshots):
        p.error(f"--snapshots {args.snapshots}: each must be below --steps {args.steps}")
    import torch  # after the arguments: --help and usage errors answer at once

    from sarnet.metrics.fid import RECIPE, classifier_path, save_classifier, train_lenet

    args.steps, args.seed = args.steps or RECIPE["steps"], RECIPE["seed"] if args.seed is None else args.seed
    if any(s >= args.steps for s in args.snapshots):
        p.error(f"--snapshots {args.snapshots}: each must be below the recipe's {args.steps} steps")
    torch.set_num_threads(args.threads)
    recipe = {**RECIPE, "steps": args.steps, "seed": args.seed, "dropout": not args.no_dropout}
    print(f"Training LeNet on {args.dataset}: {recipe}", file=sys.stderr, flush=True)
    for step, net, meta in train_lenet(args.dataset, args.root, snapshots=args.snapshots, **recipe):
        if args.out_dir:
            tag = f"s{args.seed}{'_nodrop' if args.no_dropout else ''}_{step}"
            path = Path(args.out_dir) / f"lenet_{args.dataset}_{tag}.pt"
        else:
            path = classifier_path(args.dataset, args.root)
        if args.out_dir:  # the fp32 twin: the calibration checks that fp16 storage leaves the anchors unchanged
            save_classifier(net, meta, path.with_name(path.stem + "_fp32.pt"), torch.float32)
        meta["sha256"] = save_classifier(net, meta, path)  # printed below; not stored in either file
        print(json.dumps({"path": str(path), **{k: meta[k] for k in ("steps", "test_acc", "train_seconds", "sha256")}}),
              flush=True)
