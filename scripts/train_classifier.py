"""Train (and cache under <root>/classifiers/) the small CNN whose logits are our FID features.

    python scripts/train_classifier.py --dataset mnist [--root data] [--seed 0] [--epochs N]
"""
import argparse

import torch

from sarnet.metrics.fid import DATASETS, train_classifier

if __name__ == "__main__":
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    p.add_argument("--root", default="data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--epochs", type=int, default=None, help="default: per-dataset (see fid.EPOCHS)")
    args = p.parse_args()
    torch.set_num_threads(2)
    path = train_classifier(args.dataset, args.root, seed=args.seed, epochs=args.epochs)
    meta = torch.load(path, weights_only=True)["meta"]
    print(f"test accuracy {meta['test_acc']:.4f} ({args.dataset}, seed {args.seed}, {meta['epochs']} epochs, "
          f"{meta['train_seconds']:.0f}s) -> {path}")
