"""Sanity anchors for our classifier FID, in kind with the reference's fid.ipynb (SPEC §6.6, N=5000 vs 5000).

    python scripts/calibrate_fid.py [--dataset mnist] [--classes 5] [--n 5000] [--root data] [--out calib.json]

Our feature net is not the TF-GAN classifier, so absolute values differ; what should carry over is the ordering and
rough scale: resampling noise << 1, sigma=0.5 blur a few units, sigma=1 blur and pad-5 large.
"""
import argparse
import json
import math

import torch
import torch.nn.functional as F
import torchvision.transforms.v2.functional as TF

from sarnet.metrics.fid import DATASETS, fid_between, load_classifier, load_split, to_float


def gaussian_blur_rows(x, sigma, truncate=4.0):
    """scipy.ndimage.gaussian_filter1d(x, sigma, axis=1, mode='reflect') on (N,28,28): a VERTICAL 1-D blur, each
    column along the rows axis, as the reference's apply_along_axis(..., 1, ...) did."""
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
    return TF.resize(F.pad(x, (pad,) * 4), [28, 28], interpolation=TF.InterpolationMode.BILINEAR, antialias=True)


def biased_resample(x, n, g):
    """The reference's 'biased resampling': first half of the pool drawn with prob 4/(3m), second half 2/(3m)."""
    m = len(x)
    w = torch.full((m,), 2.0)
    w[: m // 2] = 4.0
    return x[torch.multinomial(w, n, replacement=True, generator=g)]


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", choices=list(DATASETS), default="mnist")
    p.add_argument("--classes", type=int, nargs="*", default=[5], help="labels to keep (none given = all)")
    p.add_argument("--n", type=int, default=5000)
    p.add_argument("--root", default="data")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default=None, help="write the rows as JSON here")
    args = p.parse_args()
    torch.set_num_threads(2)

    net = load_classifier(args.dataset, args.root)
    pools = {}
    for split, train in (("train", True), ("test", False)):
        x, y = load_split(args.dataset, args.root, train)
        if args.classes:
            x = x[torch.isin(y, torch.tensor(args.classes))]
        pools[split] = to_float(x)[:, 0]  # float (N,28,28) in [0,1], the reference's layout
    g = torch.Generator().manual_seed(args.seed)
    n = args.n

    def draw(split):  # n draws with replacement: both pools are smaller than or close to n for one class
        return pools[split][torch.randint(len(pools[split]), (n,), generator=g)]

    def subset(split):  # n distinct images (all of them if fewer)
        return pools[split][torch.randperm(len(pools[split]), generator=g)[:n]]

    # (name, reference FID from SPEC 6.6, real set, fake set); fakes use an independent draw, as a generator would
    rows = [
        ("test vs resampled test", 0.0488, lambda: (draw("test"), draw("test"))),
        ("train vs train resample", 0.0448, lambda: (subset("train"), draw("train"))),
        ("biased resampling 2:1 (test)", 0.3698, lambda: (draw("test"), biased_resample(pools["test"], n, g))),
        ("vertical blur σ=0.5 (test)", 2.218, lambda: (draw("test"), gaussian_blur_rows(draw("test"), 0.5))),
        ("vertical blur σ=1 (test)", 37.053, lambda: (draw("test"), gaussian_blur_rows(draw("test"), 1.0))),
        ("vertical blur σ=0.5 (train)", 2.57, lambda: (subset("train"), gaussian_blur_rows(draw("train"), 0.5))),
        ("vertical blur σ=1 (train)", 36.58, lambda: (subset("train"), gaussian_blur_rows(draw("train"), 1.0))),
        ("pad 1 + resize to 28 (test)", 8.02, lambda: (draw("test"), pad_resize(draw("test")[:, None], 1)[:, 0])),
        ("pad 5 + resize to 28 (test)", 81.24, lambda: (draw("test"), pad_resize(draw("test")[:, None], 5)[:, 0])),
    ]
    results = []
    for name, ref, make in rows:
        real, fake = make()
        results.append({"comparison": name, "reference": ref, "ours": fid_between(net, real, fake)})

    what = f"{args.dataset}, classes {args.classes or 'all'}, N={n} vs {n}, seed {args.seed}"
    print(f"FID calibration ({what}; classifier test acc {net.meta['test_acc']:.4f})\n")
    print("| comparison | reference FID | ours | ours / reference |\n|---|---|---|---|")
    for r in results:
        ratio = r["ours"] / r["reference"] if r["reference"] else math.nan
        print(f"| {r['comparison']} | {r['reference']:g} | {r['ours']:.4f} | {ratio:.2f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"setting": what, "classifier": net.meta, "rows": results}, f, indent=2)
        print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
