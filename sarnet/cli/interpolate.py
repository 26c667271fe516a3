"""Walk the latent space between two real images of the run's dataset and generate along the way.

    sarnet interpolate --ckpt RUN/checkpoints/last.ckpt [--a 0] [--b 1] [--steps 10]
        [--use-mean | --sample] [--split test] [--th 0.105|none] [--nrow N] [--scale 4] [--title TEXT]
        [--root DATA] [--out PNG]

Needs a model with an encoder (SarNetVAE or ConvVAE). z walks from z_a to z_b in --steps evenly spaced points
t = 0..1 (both ends included). Without --nrow the figure is one row, image a | the steps | image b, each step
labelled with its t; with --nrow the steps alone, in rows of that many, each row labelled with its first t. The
reference (docs/reference.md §4.6) used reparameterised samples (--sample) of test images #3915 -> #5910 and
#1607 -> #3234 on full MNIST, 400 steps as a 20 x 20 grid (--steps 400 --nrow 20), th 0.105.
"""

from sarnet import cli
from sarnet.settings import th_text


def body(args, model, run):
    import torch

    from sarnet.cli import common
    from sarnet.sampling import interpolate
    common.require_encoder(model, "interpolation")
    a, b = (common.real_image(run, args.split, i, args.root, flag) for i, flag in ((args.a, "--a"), (args.b, "--b")))
    th = common.resolve_th(args.th, run)
    images = interpolate(model, a, b, steps=args.steps, use_mean=args.use_mean, th=th,
                         generator=run["generator"]).cpu()
    t = torch.linspace(0, 1, args.steps).tolist()  # the sampler's own points
    z = "mu" if args.use_mean else "sampled z"
    caption = (f"{common.data_label(run)} {args.split} #{args.a} -> #{args.b}: {args.steps} steps between "
               f"their {z}, th={th_text(th)}")
    title = common.title_of(args, f"{common.run_label(model, run)}, {args.split} #{args.a} → #{args.b}: "
                                  f"{args.steps} steps between their {z}, th {th_text(th)}")
    if args.nrow:
        rows = [f"t = {t[i]:.2f}" for i in range(0, args.steps, args.nrow)]
        return common.figure(images, args.nrow, args.scale, title, row_labels=rows), caption
    labels = [f"#{args.a}", *(f"{v:.2f}" for v in t), f"#{args.b}"]
    return common.figure(torch.cat([a, images, b]), args.steps + 2, args.scale, title, col_labels=labels), caption


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog)
    p.add_argument("--a", type=int, default=0, help="index of the first image in the (class-filtered) split")
    p.add_argument("--b", type=int, default=1)
    p.add_argument("--steps", type=cli.grid_size, default=10)
    z = p.add_mutually_exclusive_group()
    z.add_argument("--use-mean", dest="use_mean", action="store_true", default=True,
                   help="endpoints z = mu (default)")
    z.add_argument("--sample", dest="use_mean", action="store_false",
                   help="endpoints z ~ q(z|x), as the reference")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--th", type=cli.threshold, default=None, help="default: the run's sample.th")
    p.add_argument("--nrow", type=cli.positive_int, default=None,
                   help="steps per row, without the two real images (default: one row, a | steps | b)")
    cli.figure_args(p)
    p.add_argument("--root", default=None, help="data root (default: the run's data.root)")
    args = p.parse_args(argv)
    from sarnet.cli.common import run_grid  # torch: after the arguments are parsed

    return run_grid("interpolate", args, body)
