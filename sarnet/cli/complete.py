"""Complete a real image of the run's dataset: keep its first patches, generate the rest n times.

    sarnet complete --ckpt RUN/checkpoints/last.ckpt [--index 9] [--split test]
        [--keep 24 | --keep-rows 3] [--n 10] [--z-scale 0.6667] [--th 0.15|none] [--root DATA] [--out PNG]

The grid has one row: original | masked (the given patches) | n completions. Reference figure (docs/reference.md §4.5):
digit-5 test image #9, 24 of 49 patches kept, z ~ N(0, 1)/1.5, th 0.15.
"""

from sarnet import cli


def body(args, model, run):
    import torch
    from torchvision.utils import make_grid

    from sarnet.cli import common
    from sarnet.data.datamodules import quantize
    from sarnet.sampling import complete, decoder_of, to_grayscale
    common.require_autoregressive(model, "completion")
    net = decoder_of(model)
    per_row = net.image_shape[-1] // net.patch
    keep = args.keep_rows * per_row if args.keep_rows is not None else args.keep
    if not 0 < keep <= net.n_patches:
        raise cli.UsageError(f"keeping {keep} patches: must be in 1..{net.n_patches} ({per_row} per row)")
    image = common.real_image(run, args.split, args.index, args.root)
    th = common.resolve_th(args.th, run)
    draw = {}
    if net.out_activation == "softmax":  # a classification SarNET draws classes (and reads them one-hot: quantise)
        image = quantize(image, net.image_shape[0]) if net.one_hot_input else image
        draw = {"mode": "categorical", "temperature": run["sample"].get("temperature", 1.0)}
    filled, masked = complete(model, image.to(next(model.parameters()).device), keep, n=args.n,
                              z_scale=args.z_scale, th=th, method=args.method, generator=run["generator"], **draw)
    panels = to_grayscale(model, torch.cat([image, masked.cpu(), filled[0].cpu()]))
    caption = (f"{run['data']['dataset']} {args.split} #{args.index}: original | first {keep} patches | "
               f"{args.n} completions (z_scale={args.z_scale:.4g}, th={th})")
    return make_grid(panels, nrow=len(panels), pad_value=0.5), caption


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog)
    p.add_argument("--index", type=int, default=9, help="image index in the (class-filtered) split")
    p.add_argument("--split", choices=("train", "test"), default="test")
    region = p.add_mutually_exclusive_group()
    region.add_argument("--keep", type=int, default=24, help="keep the first KEEP patches (raster order)")
    region.add_argument("--keep-rows", type=int, default=None, help="keep the first rows of patches")
    p.add_argument("--n", type=cli.positive_int, default=10)
    p.add_argument("--z-scale", type=float, default=2 / 3)
    p.add_argument("--th", type=cli.threshold, default=None, help="default: the run's sample.th")
    p.add_argument("--method", choices=("fast", "naive"), default="fast")
    p.add_argument("--root", default=None, help="data root (default: the run's data.root)")
    args = p.parse_args(argv)
    from sarnet.cli.common import run_grid  # torch: after the arguments are parsed

    return run_grid("complete", args, body)
