"""A grid of samples from a trained model (sampling settings: the run's `sample` config, overridable here).

    sarnet sample --ckpt RUN/checkpoints/last.ckpt [--n 64] [--th 0.105|none] [--z-scale 1.0]
        [--method fast|naive] [--mode mean|bernoulli|categorical] [--temperature 1.0] [--nrow 8] [--scale 4]
        [--title TEXT] [--out PNG] [--seed 0] [--device auto|cpu|cuda] [--wandb]
"""

from sarnet import cli


def body(args, model, run):
    from sarnet.cli import common
    from sarnet.progress import Progress
    from sarnet.sampling import sample_images
    cfg = dict(run["sample"])
    cfg["th"] = common.resolve_th(args.th, run)
    for key, value in (("z_scale", args.z_scale), ("method", args.method)):
        if value is not None:
            cfg[key] = value
    for key, value in (("mode", args.mode), ("temperature", args.temperature)):
        if value is not None:
            cfg[key] = value
    args.mode, args.temperature = cfg.get("mode", "mean"), cfg.get("temperature", 1.0)
    out = model.out_activation
    if (args.mode == "categorical") != (out == "softmax"):
        raise cli.UsageError(f"--mode {args.mode}: categorical is for softmax (classification) models, and they "
                             f"need it; this model's output is {out}")
    if out == "none" and (args.mode != "mean" or args.temperature != 1.0):
        raise cli.UsageError("--mode bernoulli (or --temperature) needs a sigmoid (likelihood-trained) output; "
                             "this regression SarNet has a linear one")
    # the configured route, as the image callback and FID take it (regression SarNET: the noisy scheme)
    bar = Progress(args.n, "sampling")
    images = sample_images(model, args.n, cfg, run["generator"], progress=bar.update)
    bar.close()
    caption = (f"{args.n} samples, th={cfg.get('th')}, z_scale={cfg.get('z_scale', 1.0)}, "
               f"method={cfg.get('method', 'fast')}, mode={args.mode}, T={args.temperature}")
    draw = "" if args.mode == "mean" else f", {args.mode} T={args.temperature:g}"
    title = (f"{common.run_label(model, run)}: {args.n} samples, {common.z_label(model, cfg.get('z_scale', 1.0))}"
             f"th {cfg.get('th')}{draw}")
    return common.figure(images, args.nrow, args.scale, common.title_of(args, title)), caption


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog)
    p.add_argument("--n", type=cli.positive_int, default=64)
    p.add_argument("--nrow", type=cli.positive_int, default=8, help="samples per row")
    cli.figure_args(p)
    p.add_argument("--th", type=cli.threshold, default=None, help="pixels < th -> 0; 'none' disables "
                   "(default: the run's sample.th)")
    p.add_argument("--z-scale", type=float, default=None, help="z ~ N(0, z_scale^2) (default: the run's)")
    p.add_argument("--method", choices=("fast", "naive"), default=None, help="default: the run's")
    p.add_argument("--mode", choices=("mean", "bernoulli", "categorical"), default=None,
                   help="default: the run's sample.mode")
    p.add_argument("--temperature", type=float, default=None,
                   help="Bernoulli or softmax temperature (mode bernoulli or categorical; default: the run's "
                   "sample.temperature)")
    args = p.parse_args(argv)
    from sarnet.cli.common import run_grid  # torch: after the arguments are parsed

    return run_grid("sample", args, body)
