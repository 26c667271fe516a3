"""Complete a real image of the run's dataset: keep its first patches, generate the rest n times.

    sarnet complete --ckpt RUN/checkpoints/last.ckpt [--index 9] [--split test]
        [--keep 24 | --keep-rows 3] [--n 10] [--z-scale 0.6667] [--th 0.15|none] [--panels all|masked|completions]
        [--nrow N] [--scale 4] [--title TEXT] [--root DATA] [--out PNG]

--panels all (default): original | masked (the given patches) | n completions, one row unless --nrow; masked: the
masked image alone; completions: the n completions alone, in rows of --nrow. Reference figures
(docs/reference.md §4.5): digit-5 test image #9, 24 of 49 patches kept, z ~ N(0, 1)/1.5, th 0.15; the FashionMNIST
boot, test #203, 20 patches kept, z ~ N(0, 1), th 0.1, its 20 completions as 4 x 5 (--panels completions --n 20
--nrow 5) beside the masked boot (--panels masked).
"""

from sarnet import cli
from sarnet.settings import COMPLETE_Z_SCALE

KEEP = 24  # patches kept by default: the reference's digit-5 figure


def body(args, model, run):
    import torch

    from sarnet.cli import common
    from sarnet.data.datamodules import quantize
    from sarnet.nn import to_grayscale
    from sarnet.sampling import complete, decoder_of
    from sarnet.settings import SampleSettings
    common.require_autoregressive(model, "completion")
    net = decoder_of(model)
    per_row = net.image_shape[-1] // net.patch
    keep = args.keep_rows * per_row if args.keep_rows is not None else KEEP if args.keep is None else args.keep
    if not 0 < keep <= net.n_patches:
        raise cli.UsageError(f"keeping {keep} patches: must be in 1..{net.n_patches} ({per_row} per row)")
    image = common.real_image(run, args.split, args.index, args.root)
    th, z_scale = common.resolve_th(args.th, run), COMPLETE_Z_SCALE if args.z_scale is None else args.z_scale
    draw = {}
    if net.out_activation == "softmax":  # a classification SarNET draws classes (and reads them one-hot: quantise)
        image = quantize(image, net.image_shape[0]) if net.one_hot_input else image
        draw = {"mode": "categorical", "temperature": SampleSettings.of(run["sample"]).temperature}
    n = 1 if args.panels == "masked" else args.n  # the masked image alone: one (unshown) completion makes it
    filled, masked = complete(model, image.to(next(model.parameters()).device), keep, n=n, z_scale=z_scale,
                              th=th, method=args.method, generator=run["generator"], **draw)
    original, masked, filled = (to_grayscale(model, x.cpu()) for x in (image, masked, filled[0]))
    panels = {"all": torch.cat([original, masked, filled]), "masked": masked, "completions": filled}[args.panels]
    what = {"all": f"original | first {keep} patches | {args.n} completions",
            "masked": f"its first {keep} of {net.n_patches} patches",
            "completions": f"{args.n} completions of its first {keep} patches"}[args.panels]
    how = "" if args.panels == "masked" else f" ({common.draw_label(model, z_scale, th)})"
    caption = f"{common.data_label(run)} {args.split} #{args.index}: {what}{how}"
    title = (f"{args.split} #{args.index}, first {keep} of {net.n_patches} patches" if args.panels == "masked"
             else f"{common.run_label(model, run)}, {args.split} #{args.index}: {what}{how}")  # masked: one panel wide
    nrow = args.nrow or len(panels)
    labels = ["original", f"first {keep}", *range(1, args.n + 1)] if args.panels == "all" and nrow >= len(panels) \
        else None
    return common.figure(panels, nrow, args.scale, common.title_of(args, title), col_labels=labels), caption


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog)
    p.add_argument("--index", type=int, default=9, help="image index in the (class-filtered) split")
    p.add_argument("--split", choices=("train", "test"), default="test")
    region = p.add_mutually_exclusive_group()
    # default None, KEEP in body(): argparse takes a value equal to the default as not given (--keep 24 --keep-rows 3)
    region.add_argument("--keep", type=cli.positive_int, default=None,
                        help=f"keep the first KEEP patches (raster order; {KEEP})")
    region.add_argument("--keep-rows", type=cli.positive_int, default=None, help="keep the first rows of patches")
    p.add_argument("--n", type=cli.grid_size, default=10)
    p.add_argument("--z-scale", type=cli.positive_float, default=None,
                   help=f"z ~ N(0, z_scale² I) ({COMPLETE_Z_SCALE:.4g})")
    p.add_argument("--th", type=cli.threshold, default=None, help="default: the run's sample.th")
    p.add_argument("--method", choices=("fast", "naive"), default="fast")
    p.add_argument("--panels", choices=("all", "masked", "completions"), default="all",
                   help="all: original | masked | completions; masked or completions alone (the seed's two pictures)")
    p.add_argument("--nrow", type=cli.positive_int, default=None, help="panels per row (default: all in one row)")
    cli.figure_args(p)
    p.add_argument("--root", default=None, help="data root (default: the run's data.root)")
    args = p.parse_args(argv)
    from sarnet.cli.common import run_grid  # torch: after the arguments are parsed

    return run_grid("complete", args, body)
