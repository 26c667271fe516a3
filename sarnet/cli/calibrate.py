"""The thesis' FID sanity anchors (its fid notebook: N = 5,000 vs 5,000 MNIST fives) on our feature network.

    sarnet calibrate [--n 5000] [--seed 0] [--out calib.json]        # the shipped network, MNIST fives
    sarnet calibrate --dataset fashion_mnist --out calib.json         # FashionMNIST, all ten classes
    sarnet calibrate --weights a.pt b.pt ...                          # compare candidate networks

Prints each anchor beside the thesis' value with the ratio ours / thesis (MNIST fives, the thesis' setting; other
datasets and classes have no thesis value: their anchors are the scale a reader needs). Every network is scored
on the same image sets. The thesis' "Gaussian blur" is a vertical 1-D blur, reproduced as such.
"""

import sys
from pathlib import Path

from sarnet import cli
from sarnet.data.sources import FOLDERS, LABELS, DataError
from sarnet.io import write_json

# torch and the FID code are imported after the arguments are parsed: --help and usage errors answer at once


def gaussian_blur_rows(x, sigma, truncate=4.0):
    """scipy.ndimage.gaussian_filter1d(x, sigma, axis=1, mode='reflect') on (N,28,28): a VERTICAL 1-D blur, each
    column along the rows axis, as the reference's apply_along_axis(..., 1, ...) did."""
    import torch
    import torch.nn.functional as F
    r = int(truncate * sigma + 0.5)
    k = torch.exp(-0.5 * (torch.arange(-r, r + 1, dtype=torch.float64) / sigma) ** 2)
    k = (k / k.sum()).float()
    n = x.shape[1]
    # scipy 'reflect' = half-sample symmetric (d c b a | a b c d | d c b a); torch's 'reflect' is scipy 'mirror'
    i = torch.arange(-r, n + r)
    i = torch.where(i < 0, -i - 1, torch.where(i >= n, 2 * n - i - 1, i))
    cols = x[:, i, :].permute(0, 2, 1).reshape(-1, 1, n + 2 * r)  # every column as a 1-D signal
    out = F.conv1d(cols, k.view(1, 1, -1))
    return out.view(x.shape[0], x.shape[2], n).permute(0, 2, 1)


def pad_resize(x, pad):
    """Zero-pad `pad` pixels each side, then shrink back to 28x28 (bilinear, antialiased): a smaller digit."""
    import torch.nn.functional as F
    import torchvision.transforms.v2.functional as TF
    return TF.resize(F.pad(x, (pad,) * 4), [28, 28], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def biased_resample(x, n, g):
    """The reference's 'biased resampling': first half of the pool drawn with prob 4/(3m), second half 2/(3m)."""
    import torch
    m = len(x)
    w = torch.full((m,), 2.0)
    w[: m // 2] = 4.0
    return x[torch.multinomial(w, n, replacement=True, generator=g)]


ANCHORS = [  # (comparison, the thesis' FID; N = 5,000 vs 5,000, MNIST fives)
    ("test vs resampled test", 0.0488), ("train vs train resample", 0.0448),
    ("biased resampling 2:1 (test)", 0.3698), ("vertical blur σ=0.5 (test)", 2.218),
    ("vertical blur σ=1 (test)", 37.053), ("vertical blur σ=0.5 (train)", 2.57), ("vertical blur σ=1 (train)", 36.58),
    ("pad 1 + resize to 28 (test)", 8.02), ("pad 5 + resize to 28 (test)", 81.24),
]


def anchor_sets(pools, n, seed):
    """(comparison, reference, real, fake) for every anchor; the same draws for every feature network scored."""
    import torch
    g = torch.Generator().manual_seed(seed)

    def draw(split):  # n draws with replacement: both pools are smaller than or close to n for one class
        return pools[split][torch.randint(len(pools[split]), (n,), generator=g)]

    def subset(split):  # n distinct images (all of them if fewer)
        return pools[split][torch.randperm(len(pools[split]), generator=g)[:n]]

    # fakes use an independent draw, as a generator would
    make = {
        "test vs resampled test": lambda: (draw("test"), draw("test")),
        "train vs train resample": lambda: (subset("train"), draw("train")),
        "biased resampling 2:1 (test)": lambda: (draw("test"), biased_resample(pools["test"], n, g)),
        "vertical blur σ=0.5 (test)": lambda: (draw("test"), gaussian_blur_rows(draw("test"), 0.5)),
        "vertical blur σ=1 (test)": lambda: (draw("test"), gaussian_blur_rows(draw("test"), 1.0)),
        "vertical blur σ=0.5 (train)": lambda: (subset("train"), gaussian_blur_rows(draw("train"), 0.5)),
        "vertical blur σ=1 (train)": lambda: (subset("train"), gaussian_blur_rows(draw("train"), 1.0)),
        "pad 1 + resize to 28 (test)": lambda: (draw("test"), pad_resize(draw("test")[:, None], 1)[:, 0]),
        "pad 5 + resize to 28 (test)": lambda: (draw("test"), pad_resize(draw("test")[:, None], 5)[:, 0]),
    }
    return [(name, ref, *make[name]()) for name, ref in ANCHORS]


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("--dataset", choices=list(FOLDERS), default="mnist")
    p.add_argument("--classes", type=int, nargs="*", default=None, choices=LABELS, metavar="LABEL",
                   help="labels to keep (default: 5 for mnist, as the thesis; all for fashion_mnist; none given = all)")
    p.add_argument("--n", type=cli.int_at_least(2), default=5000)
    p.add_argument("--root", default="data")
    p.add_argument("--seed", type=cli.seed, default=0)
    p.add_argument("--weights", nargs="*", default=None,
                   help="LeNet weight files to compare (default: the dataset's feature network)")
    p.add_argument("--out", type=cli.writable, default=None, help="write the rows as JSON here")
    p.add_argument("--threads", type=cli.positive_int, default=2)
    args = p.parse_args(argv)
    if args.classes is None:
        args.classes = [5] if args.dataset == "mnist" else []
    import torch

    from sarnet.data.datamodules import load_split
    from sarnet.metrics.fid import ClassifierCacheError, fid_between, load_classifier, read_lenet

    torch.set_num_threads(args.threads)
    try:  # the feature networks, then the data: a refusal comes before any work
        nets = ([read_lenet(w) for w in args.weights] if args.weights
                else [load_classifier(args.dataset, args.root, train_if_missing=False)])
        pools = {split: load_split(args.root, args.dataset, split, args.classes or None)[0][:, 0]  # (N,28,28)
                 for split in ("train", "test")}
    except (ClassifierCacheError, DataError) as e:
        cli.fail(args.prog, e)
    names = [Path(w).stem for w in args.weights] if args.weights else ["ours"]
    thesis = args.dataset == "mnist" and args.classes == [5]  # the thesis' values hold for its setting only
    rows = []
    for i, (name, ref, real, fake) in enumerate(anchor_sets(pools, args.n, args.seed)):
        print(f"anchor {i + 1}/{len(ANCHORS)}: {name}", file=sys.stderr, flush=True)
        rows.append({"comparison": name, "reference": ref if thesis else None,
                     "ours": {n: fid_between(net, real, fake) for n, net in zip(names, nets)}})
    what = f"{args.dataset}, classes {args.classes or 'all'}, N={args.n} vs {args.n}, seed {args.seed}"
    acc = ", ".join(f"{n} {net.meta['test_acc']:.4f}" for n, net in zip(names, nets))
    print(f"FID calibration ({what}; feature network test accuracy: {acc})\n")
    print("\n".join(markdown(rows, names)))
    if args.out:
        payload = {"setting": what, "feature_networks": {n: net.meta for n, net in zip(names, nets)}, "rows": rows}
        write_json(args.out, payload)
        print(f"\nwrote {args.out}")
    return rows


def markdown(rows, names):
    """The anchors as a Markdown table: with the thesis' column and ratios where the setting is the thesis'."""
    thesis = rows[0]["reference"] is not None
    if not thesis:
        return (["| comparison | " + " | ".join(names) + " |", "|---|" + "---|" * len(names)] +
                [f"| {r['comparison']} | " + " | ".join(f"{r['ours'][n]:.4g}" for n in names) + " |" for r in rows])
    lines = ["| comparison | thesis | " + " | ".join(f"{n} | ratio" for n in names) + " |",
             "|---|---|" + "---|---|" * len(names)]
    for r in rows:
        cells = [f"{r['ours'][n]:.4f} | {r['ours'][n] / r['reference']:.2f}" for n in names]
        lines.append(f"| {r['comparison']} | {r['reference']:g} | " + " | ".join(cells) + " |")
    return lines
