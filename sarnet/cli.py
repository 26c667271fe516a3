"""What every script under scripts/ shares: the common flags, loading a checkpoint, saving and logging a grid.

    p = cli.parser(__doc__); p.add_argument(...); cli.main(p, body)  # body(args, model, run) -> grid, caption
"""

import argparse
import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

from sarnet.checkpoint import CheckpointError, load_model, load_run_config


class UsageError(Exception):
    """A request this model or data cannot serve: printed as one line, exit status 2."""


def parser(doc: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="checkpoint written by train.py (<run>/checkpoints/*.ckpt), or a "
                   "run dir (its checkpoints/last.ckpt)")
    p.add_argument("--out", default=None, help="PNG path (default: <run>/images/<script>_<ckpt name>[_N].png, a new "
                   "file each call)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    p.add_argument("--wandb", action="store_true", help="log the PNG to a new offline W&B run in the run dir")
    return p


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


def int_at_least(minimum: int):
    """argparse type: an int >= minimum, else one line saying which."""
    def parse(s: str) -> int:
        try:
            value = int(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{s!r} is not an int") from None
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{value} must be >= {minimum}")
        return value
    return parse


positive_int = int_at_least(1)


def checkpoint_path(arg: str) -> Path:
    """--ckpt as given, or a run dir's checkpoints/last.ckpt."""
    path = Path(arg)
    if path.is_dir():
        for candidate in (path / "checkpoints" / "last.ckpt", path / "last.ckpt"):
            if candidate.is_file():
                return candidate
        raise UsageError(f"--ckpt {arg} is a folder without checkpoints/last.ckpt: give a .ckpt file or a run dir")
    return path


def fresh_path(path: Path) -> Path:
    """path, or path with _2, _3, ... before the suffix: a default output never overwrites an earlier one."""
    n, out = 1, path
    while out.exists():
        n += 1
        out = path.with_name(f"{path.stem}_{n}{path.suffix}")
    return out


def resolve_th(value, run: dict):
    """--th as given; not given -> the run's sample.th (null = no threshold)."""
    if value is None:
        return run["sample"].get("th")
    return None if value == "none" else value


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UsageError("--device cuda but no CUDA device is available; use --device cpu or auto")
    return torch.device(name)


def require_autoregressive(model, what: str):
    if model.ar_net is None:
        raise UsageError(f"{what} needs an autoregressive SarNet or SarNetVAE checkpoint; this one holds a "
                         f"{type(model).__name__}, which is not autoregressive")


def require_encoder(model, what: str):
    if not hasattr(model, "encoder"):
        raise UsageError(f"{what} needs a model with an encoder (SarNetVAE or ConvVAE); this checkpoint "
                         f"holds a {type(model).__name__}")


def real_image(run: dict, split: str, index: int, root=None) -> torch.Tensor:
    """Image `index` of the run's data (its dataset and class filter), as (1, C, H, W)."""
    from sarnet.data import DataError, real_images
    data = run["data"]
    try:
        x = real_images(root or data["root"], data["dataset"], data["classes"], split)
    except (DataError, OSError) as e:
        raise UsageError(f"cannot read the {data['dataset']} {split} split under {root or data['root']}: {e} "
                         f"(prepare it with `make data` or pass --root)") from e
    if not 0 <= index < len(x):
        raise UsageError(f"--index {index}: the {split} split of {data['dataset']} "
                         f"(classes {data['classes']}) has {len(x)} images")
    return x[index:index + 1]


def log_wandb(path: Path, key: str, caption: str, args, run: dict):
    """Log to the active W&B run if there is one; with --wandb, to a fresh offline one in the run dir."""
    wandb = sys.modules.get("wandb")  # never imported -> no active run, and no import cost
    if args.wandb:
        import wandb

        from sarnet import tracking
        wandb.init(mode=tracking.choose_mode(), dir=str(run["run_dir"]), project="sarnet", job_type=key,
                   config=vars(args), settings=wandb.Settings(silent=True, init_timeout=30))
    if wandb is None or wandb.run is None:
        return
    wandb.log({key: wandb.Image(str(path), caption=caption)})
    if args.wandb:
        wandb.finish()


def load_run(ckpt_arg: str, device_arg: str = "auto"):
    """--ckpt (a .ckpt file or a run dir) and --device -> (model, run, device), the one way every script loads.
    Bad input raises CheckpointError or UsageError, which the scripts print as one line."""
    device = pick_device(device_arg)
    ckpt = str(checkpoint_path(ckpt_arg))
    model = load_model(ckpt, map_location=device)
    run = load_run_config(ckpt)
    run["ckpt"] = ckpt
    return model, run, device


def fail(name: str, e: Exception):
    print(f"{name}: error: {e}", file=sys.stderr)
    sys.exit(2)


def main(p: argparse.ArgumentParser, body, argv=None) -> Path:
    """Parse, seed, load the checkpoint, body(args, model, run) -> (grid (C, H, W), caption), save, log.
    `run` is load_run_config's dict plus "generator" (seeded by --seed)."""
    args = p.parse_args(argv)
    name = Path(p.prog).stem
    try:
        torch.manual_seed(args.seed)
        model, run, _ = load_run(args.ckpt, args.device)
        args.ckpt = run["ckpt"]
        run["generator"] = torch.Generator().manual_seed(args.seed)  # on the CPU: same draws on any device
        grid, caption = body(args, model, run)
        default = run["run_dir"] / "images" / f"{name}_{Path(args.ckpt).stem}.png"
        out = Path(args.out) if args.out else fresh_path(default)
        out.parent.mkdir(parents=True, exist_ok=True)
        save_image(grid.float().cpu(), out)
        log_wandb(out, name, caption, args, run)
    except (CheckpointError, UsageError, ValueError) as e:  # ValueError: a request the sampler refuses
        fail(name, e)
    print(f"{caption} -> {out}")
    return out
