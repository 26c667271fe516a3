"""Patch importance overlays (docs/reference.md §7) for one real image: one panel per target patch.

    sarnet importance --ckpt RUN/checkpoints/last.ckpt [--index 5] [--targets 2,4,...,40]
        [--top-k 5] [--method layer1|gradient] [--split test] [--nrow 10] [--scale 4] [--title TEXT]
        [--root DATA] [--out PNG]

Each panel, labelled with its target patch: the image in grey, the target patch white, its top-k source patches
coloured by score (matplotlib "cool": magenta = most important, cyan = least of the k). layer1 is the reference's
linear score on the first SemiDense layer only; gradient is gradient x input through the whole network. The
reference's pictures: simple SarNET (MSE + SSIM) on digit-5 test image #5, and SarNET-VAE L = 128 on FashionMNIST
test image #132, targets 2, 4, ..., 40, top 5, layer 1.
"""

import argparse

from sarnet import cli

TOP_K = 5  # input patches shown per target: the reference's figures


def body(args, model, run):
    import torch

    from sarnet.cli import common
    from sarnet.data.datamodules import quantize
    from sarnet.explain import gradient_importance, importance_overlay, patch_importance
    from sarnet.sampling import decoder_of
    common.require_autoregressive(model, "patch importance")
    net = decoder_of(model)
    targets = list(range(2, 41, 2)) if args.targets is None else args.targets
    if bad := [t for t in targets if not 0 <= t < net.n_patches]:
        raise cli.UsageError(f"--targets {bad}: target patches must be in 0..{net.n_patches - 1}")
    most = max(1, *targets)  # target patch t has t earlier patches to rank (patch 0: itself, first_patch="given")
    if (args.top_k or 0) > most:
        raise cli.UsageError(f"--top-k {args.top_k}: the targets have at most {most} earlier patch{'es' * (most > 1)}; "
                             f"give a --top-k up to that")
    top_k = args.top_k or min(TOP_K, most)  # the default shrinks to what the targets have: --targets 1 works
    image = common.real_image(run, args.split, args.index, args.root)[0]
    x = quantize(image[None], net.image_shape[0])[0] if net.one_hot_input else image  # what a classification net reads
    panels = []
    for t in targets:
        if args.method == "layer1":
            patches, scores = patch_importance(model, x, t, top_k)
        else:
            scores = gradient_importance(model, x, t)
            patches = torch.argsort(scores, descending=True, stable=True)[:top_k]
            patches, scores = patches[scores[patches] > 0], scores[patches][scores[patches] > 0]
        panels.append(importance_overlay(image, t, patches, scores, net.patch))
    caption = (f"{common.data_label(run)} {args.split} #{args.index}, {args.method} importance, "
               f"top {top_k}, targets {targets} (white), cool colormap: magenta = 1")
    title = (f"{common.run_label(model, run)}, {args.split} #{args.index}: the top {top_k} input patches of "
             f"each target patch (white) by {'first-layer' if args.method == 'layer1' else 'gradient x input'} "
             f"score, magenta most, cyan least")
    return common.figure(torch.stack(panels), args.nrow, args.scale, common.title_of(args, title), pad_value=1.0,
                         cell_labels=[f"patch {t}" for t in targets]), caption


def ints(s: str) -> list[int]:
    try:
        return [int(t) for t in s.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a comma list of ints, e.g. 2,4,6") from None


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog)
    p.add_argument("--index", type=int, default=5, help="image index in the (class-filtered) split")
    p.add_argument("--targets", type=ints, default=None, help="comma-separated target patches (default 2,4,...,40)")
    p.add_argument("--top-k", type=cli.positive_int, default=None,
                   help=f"input patches shown per target ({TOP_K}, or fewer if the targets have fewer)")
    p.add_argument("--method", choices=("layer1", "gradient"), default="layer1")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--nrow", type=cli.positive_int, default=10, help="panels per row")
    cli.figure_args(p)
    p.add_argument("--root", default=None, help="data root (default: the run's data.root)")
    args = p.parse_args(argv)
    from sarnet.cli.common import run_grid  # torch: after the arguments are parsed

    return run_grid("importance", args, body)
