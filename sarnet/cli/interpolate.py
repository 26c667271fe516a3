"""Walk the latent space between two real images of the run's dataset and generate along the way.

    sarnet interpolate --ckpt RUN/checkpoints/last.ckpt [--a 0] [--b 1] [--steps 10]
        [--use-mean | --sample] [--split test] [--th 0.105|none] [--root DATA] [--out PNG]

Needs a model with an encoder (SarNetVAE or ConvVAE). The grid has one row: image a | the steps | image b.
The reference (docs/reference.md §4.6) used reparameterised samples (--sample) and 400 steps on full MNIST.
"""

from sarnet import cli


def body(args, model, run):
    import torch
    from torchvision.utils import make_grid

    from sarnet.cli import common
    from sarnet.sampling import interpolate
    common.require_encoder(model, "interpolation")
    a, b = (common.real_image(run, args.split, i, args.root) for i in (args.a, args.b))
    th = common.resolve_th(args.th, run)
    images = interpolate(model, a, b, steps=args.steps, use_mean=args.use_mean, th=th,
                         generator=run["generator"])
    panels = torch.cat([a, images.cpu(), b])
    z = "mu" if args.use_mean else "sampled z"
    caption = (f"{run['data']['dataset']} {args.split} #{args.a} -> #{args.b}: {args.steps} steps between "
               f"their {z}, th={th}")
    return make_grid(panels, nrow=len(panels), pad_value=0.5), caption


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog)
    p.add_argument("--a", type=int, default=0, help="index of the first image in the (class-filtered) split")
    p.add_argument("--b", type=int, default=1)
    p.add_argument("--steps", type=cli.positive_int, default=10)
    z = p.add_mutually_exclusive_group()
    z.add_argument("--use-mean", dest="use_mean", action="store_true", default=True,
                   help="endpoints z = mu (default)")
    z.add_argument("--sample", dest="use_mean", action="store_false",
                   help="endpoints z ~ q(z|x), as the reference")
    p.add_argument("--split", choices=("train", "test"), default="test")
    p.add_argument("--th", type=cli.threshold, default=None, help="default: the run's sample.th")
    p.add_argument("--root", default=None, help="data root (default: the run's data.root)")
    args = p.parse_args(argv)
    from sarnet.cli.common import run_grid  # torch: after the arguments are parsed

    return run_grid("interpolate", args, body)
