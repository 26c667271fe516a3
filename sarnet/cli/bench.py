"""Speed against the reference loop and the machine's floors: one JSON line per case, measured in this run.

    sarnet bench                                  # every case
    sarnet bench train sample --out bench.jsonl   # some, also written to a file
    sarnet bench --markdown bench.jsonl           # the speed table of docs/results/speed.md

The cases and what each measures: sarnet/bench.py's docstring.
"""

import argparse
import json
from pathlib import Path

from sarnet import cli
from sarnet.settings import MAX_BATCH, MAX_IMAGES, MAX_K

CASES = ("train", "train_vae", "sample", "sample_pixel", "sample_regression", "fid", "nll")  # sarnet/bench.py CASES


def json_lines(arg: str) -> list[dict]:
    """--markdown's file -> its rows: JSON objects, one per line, as --out writes them."""
    try:
        rows = [json.loads(line) for line in Path(arg).read_text().splitlines() if line.strip()]
    except (OSError, ValueError) as e:
        raise argparse.ArgumentTypeError(f"{arg!r}: not a readable file of JSON lines ({e})") from None
    if not rows or not all(isinstance(r, dict) and "case" in r for r in rows):
        raise argparse.ArgumentTypeError(f"{arg!r} holds no rows of sarnet bench (JSON objects with a 'case')")
    return rows


def main(argv=None, prog=None):
    p = cli.parser(__doc__, prog, ckpt=False)
    p.add_argument("cases", nargs="*", default=[], help=f"any of {list(CASES)} (default: all)")
    p.add_argument("--data", default="data")
    p.add_argument("--n", type=cli.int_at_least(1, MAX_IMAGES, " (images in one generate call)"), default=10_000,
                   help="images for the sampling / FID cases")
    p.add_argument("--epochs", type=cli.positive_int, default=3, help="train cases: timed epochs per line, one per "
                   "round of every line (each after a warm-up epoch)")
    p.add_argument("--naive-images", type=cli.positive_int, default=500,
                   help="sample_pixel, nll: images timed on the naive path")
    p.add_argument("--fast-batch", type=cli.int_at_least(1, MAX_BATCH), default=None, help="sample, sample_pixel: "
                   "images per fast-sampler call (default: conf/config.yaml's sample.batch_size); fid uses "
                   "fid.batch_size")
    p.add_argument("--k", type=cli.int_at_least(1, MAX_K), default=100,
                   help="nll: importance samples per image for nll_iwae")
    p.add_argument("--nll-images", type=cli.positive_int, default=1000, help="nll: test images scored by nll_iwae")
    p.add_argument("--threads", type=cli.positive_int, default=None)
    p.add_argument("--out", type=cli.writable, help="also write the JSON lines to this file (replaced)")
    p.add_argument("--markdown", type=json_lines, metavar="JSONL", help="print the speed table from a file of JSON "
                   "lines written by --out, and exit")
    args = p.parse_args(argv)
    if unknown := [c for c in args.cases if c not in CASES]:
        p.error(f"unknown case(s) {unknown}: choose from {list(CASES)}")
    if not args.markdown and {"train", "train_vae", "fid", "nll"} & set(args.cases or CASES) and \
            not Path(args.data).is_dir():  # the cases that read data
        p.error(f"--data {args.data} is not a folder: give the prepared data's (sarnet data --root DIR)")
    from sarnet import bench

    if args.fast_batch is None:
        args.fast_batch = bench.SAMPLE_BATCH
    bench.run(args)
