"""A grid of samples from a trained model (sampling settings: the run's `sample` config, overridable here).

    sarnet sample --ckpt RUN/checkpoints/last.ckpt [--n 64] [--th 0.105|none] [--z-scale 1.0]
        [--method fast|naive] [--mode mean|bernoulli|categorical] [--temperature 1.0] [--nrow 8] [--scale 4]
        [--title TEXT] [--out PNG] [--seed 0] [--device auto|cpu|cuda] [--wandb]
"""

from sarnet import cli
from sarnet.settings import th_text


def body(args, model, run):
    from sarnet.cli import common
    from sarnet.progress import Progress
    from sarnet.sampling import sample_images
    from sarnet.settings import SampleSettings, SettingsError
    try:
        s = SampleSettings.of(run["sample"], z_scale=args.z_scale, method=args.method, mode=args.mode,
                              temperature=args.temperature) | {"th": common.resolve_th(args.th, run)}
    except SettingsError as e:
        raise cli.UsageError(f"--{e.field.replace('_', '-')} {e.value}: {e.allowed}") from None
    try:
        s.check_fits(model.out_activation)
    except ValueError as e:
        raise cli.UsageError(f"--mode {s.mode}: {e}") from None
    # the configured route, as the image callback and FID take it (regression SarNET: the noisy scheme)
    bar = Progress(args.n, "sampling")
    images = sample_images(model, args.n, s, run["generator"], progress=bar.update)
    bar.close()
    caption = (f"{args.n} samples, th={th_text(s.th)}, z_scale={s.z_scale}, method={s.method}, mode={s.mode}, "
               f"T={s.temperature}")
    draw = "" if s.mode == "mean" else f", {s.mode} T={s.temperature:g}"
    title = f"{common.run_label(model, run)}: {args.n} samples, {common.draw_label(model, s.z_scale, s.th)}{draw}"
    return common.figure(images, args.nrow, args.scale, common.title_of(args, title)), caption


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog)
    p.add_argument("--n", type=cli.grid_size, default=64)
    p.add_argument("--nrow", type=cli.positive_int, default=8, help="samples per row")
    cli.figure_args(p)
    p.add_argument("--th", type=cli.threshold, default=None, help="pixels < th -> 0; 'none' disables "
                   "(default: the run's sample.th)")
    p.add_argument("--z-scale", type=cli.positive_float, default=None, help="z ~ N(0, z_scale^2) (default: the run's)")
    p.add_argument("--method", choices=("fast", "naive"), default=None, help="default: the run's")
    p.add_argument("--mode", choices=("mean", "bernoulli", "categorical"), default=None,
                   help="default: the run's sample.mode")
    p.add_argument("--temperature", type=cli.positive_float, default=None,
                   help="Bernoulli or softmax temperature (mode bernoulli or categorical; default: the run's "
                   "sample.temperature)")
    args = p.parse_args(argv)
    from sarnet.cli.common import run_grid  # torch: after the arguments are parsed

    return run_grid("sample", args, body)
