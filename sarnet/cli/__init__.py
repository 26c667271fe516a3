"""`sarnet <command>` (and `python -m sarnet`): one entry for training and every evaluation command.

Nothing here imports torch: `sarnet --help`, a command's `--help` and its usage errors answer at once; each command
module parses its arguments first and imports the heavy libraries only to do the work.
"""

import argparse
import importlib
import os
import sys
import tempfile
from pathlib import Path

from sarnet.settings import MAX_GRID

# name -> (module whose main(argv) runs it, one line of help). The order is the order of `sarnet --help`.
COMMANDS = {
    "train": ("sarnet.cli.train", "train a model (Hydra overrides, as python train.py; -m for a sweep)"),
    "sample": ("sarnet.cli.sample", "a grid of samples from a checkpoint"),
    "complete": ("sarnet.cli.complete", "complete a real image from its first patches"),
    "interpolate": ("sarnet.cli.interpolate", "generate along the latent path between two real images"),
    "importance": ("sarnet.cli.importance", "which input patches a target patch depends on"),
    "fid": ("sarnet.cli.fid", "FID of a checkpoint (its run's protocol, or a grid of settings)"),
    "likelihood": ("sarnet.cli.likelihood", "test NLL / -IWAE_k of a density model"),
    "table": ("sarnet.table", "the FID tables, plot and Welch tests of sweep or run dirs"),
    "calibrate": ("sarnet.cli.calibrate", "the FID feature network's anchor values"),
    "bench": ("sarnet.cli.bench", "speed against the reference loop and the machine's floors (JSON lines)"),
    "gpu-check": ("sarnet.cli.gpu_check", "on a CUDA machine: smoke training, fast == naive, timings"),
    "xgb": ("sarnet.cli.xgb", "the generative-XGBoost prototype"),
    "train-classifier": ("sarnet.cli.train_classifier", "re-make the FID feature network's weights"),
    "data": ("sarnet.data.sources", "prepare MNIST and FashionMNIST under --root, from pinned sources"),
}


def main(argv=None):
    try:
        try:
            return command(sys.argv[1:] if argv is None else list(argv))
        finally:  # here, not at exit (argparse's --help exits): the reader of a pipe may have gone
            sys.stdout.flush()
    except BrokenPipeError:  # `sarnet --help | head`: the reader has gone; nothing left to say, no traceback
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # Python flushes stdout again at exit
        return 1


def command(argv: list[str]):
    if not argv or argv[0] in ("-h", "--help"):
        width = max(map(len, COMMANDS))
        print("usage: sarnet <command> [args]   (sarnet <command> --help: its arguments and an example)\n")
        print("\n".join(f"  {name:<{width}}  {help_}" for name, (_, help_) in COMMANDS.items()))
        print("\nexample: sarnet train -m latent_dim=8,16,32,64,128")
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        fail("sarnet", f"unknown command {name!r}; choose one of: {', '.join(COMMANDS)}")
    importlib.import_module(COMMANDS[name][0]).main(rest, prog=f"sarnet {name}")  # a refusal exits 2 itself
    return 0


# ---- argument helpers every command shares (torch-free) ----

class UsageError(Exception):
    """A request this model or data cannot serve: printed as one line, exit status 2."""


def writable(arg: str, folder=False) -> str:
    """argparse type of a file a command writes (folder: a folder it writes into): checked by a probe file made and
    removed in its nearest existing folder, so that no long computation ends on an unwritable path."""
    path = Path(arg).absolute()
    try:
        if not arg or path.is_dir() != folder and path.exists():
            raise IsADirectoryError(21, "empty" if not arg else "a file, not a folder" if folder else
                                    "a folder, not a file")
        tempfile.TemporaryFile(dir=path if path.is_dir() else next(d for d in path.parents if d.exists())).close()
    except OSError as e:
        raise argparse.ArgumentTypeError(f"{arg!r}: cannot write there ({e.strerror or e})") from None
    return arg


def checkpoint_file(arg) -> Path:
    """--ckpt as given (a file), or a run dir's checkpoints/last.ckpt; else UsageError. Torch-free: checked while
    the arguments are parsed, before any heavy import."""
    from sarnet.checkpoint import resume_path

    path = resume_path(arg)
    if Path(arg).is_dir() and not path.is_file():
        raise UsageError(f"{arg} is a folder without checkpoints/last.ckpt: give a .ckpt file or a run dir")
    if not path.is_file():
        raise UsageError(f"{arg}: no such checkpoint file: give a .ckpt written by train.py, or a run dir")
    return path


def checkpoint(arg: str) -> str:
    """argparse type of --ckpt: checkpoint_file's answer, or its refusal as argparse's one-line usage error."""
    try:
        return str(checkpoint_file(arg))
    except UsageError as e:
        raise argparse.ArgumentTypeError(str(e)) from None


class Parser(argparse.ArgumentParser):
    """argparse, whose usage errors are one line (the usage block is what --help shows)."""

    def error(self, message):
        fail(self.prog, f"{message} (see {self.prog} --help)")

    def parse_args(self, args=None, namespace=None):  # args.prog: what later refusals start with, as this one's
        return super().parse_args(args, namespace or argparse.Namespace(prog=self.prog))


CKPT_HELP = "checkpoint written by train.py (<run>/checkpoints/*.ckpt), or a run dir (its checkpoints/last.ckpt)"


def parser(doc: str, prog=None, ckpt=True) -> argparse.ArgumentParser:
    """The parser of a command whose module docstring is `doc`: a summary paragraph, then the usage example
    (indented lines), then any further description. --help prints the description and ends with the example."""
    summary, example, *rest = doc.strip("\n").split("\n\n") + [""]
    p = Parser(prog=prog, description="\n\n".join([summary, *rest]).strip(), epilog="example:\n" + example,
               formatter_class=argparse.RawDescriptionHelpFormatter)
    if not ckpt:
        return p
    p.add_argument("--ckpt", required=True, type=checkpoint, help=CKPT_HELP)
    p.add_argument("--out", type=writable, default=None, help="PNG path (default: <run>/images/<script>_<ckpt "
                   "name>[_N].png, a new file each call)")
    p.add_argument("--seed", type=seed, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    wandb_flag(p)
    return p


def wandb_flag(p: argparse.ArgumentParser):
    p.add_argument("--wandb", action="store_true", help="log to W&B: a run beside the training run (its group, "
                   "job_type=eval), offline in the run dir unless an API key and the server are there")


def threshold(s: str):
    """--th: a float in [0, 1), or 'none' for no threshold (pixels are in [0, 1]: th >= 1 blanks every image)."""
    if s.lower() in ("none", "null"):
        return "none"
    try:
        value = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number in [0, 1) or 'none'") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"{s} is not in [0, 1) (pixels are in [0, 1]); or 'none'")
    return value


def int_at_least(minimum: int, maximum: int | None = None, why: str = ""):
    """argparse type: an int >= minimum (and <= maximum, `why` saying what bounds it), else one line saying which."""
    def parse(s: str) -> int:
        try:
            value = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not an int") from None
        if value < minimum or maximum is not None and value > maximum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}" if maximum is None else
                                             f"{value} must be in [{minimum}, {maximum}]{why}")
        return value
    return parse


def positive_float(s: str) -> float:
    """argparse type: a finite number > 0, else one line saying so."""
    try:
        value = float(s)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{s!r} is not a number") from None
    if not 0 < value < float("inf"):
        raise argparse.ArgumentTypeError(f"{s} must be a finite number > 0")
    return value


positive_int = int_at_least(1)
seed = int_at_least(0, 2**32 - 1, " (numpy's and Lightning's seed range)")
grid_size = int_at_least(1, MAX_GRID, " (images in one picture)")
MAX_SCALE = 16  # --scale: at MAX_GRID images a picture holds ~200 M pixels


def figure_args(p: argparse.ArgumentParser):
    """--scale and --title, for the commands that draw a figure (sarnet.cli.common.figure)."""
    scale = int_at_least(1, MAX_SCALE, f" (a 28-pixel image {28 * MAX_SCALE} pixels wide)")
    p.add_argument("--scale", type=scale, default=4,
                   help="draw each pixel as a SCALE x SCALE block (default 4: a 28-pixel image is 112 pixels wide)")
    p.add_argument("--title", default=None, help="caption strip above the figure (default: a short one naming "
                   "the data and settings; '' for none)")


def fail(name: str, e: Exception):
    print(f"{name}: error: {e}", file=sys.stderr)
    sys.exit(2)


