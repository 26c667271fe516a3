"""The commands' shared torch side: loading a checkpoint, saving and logging a grid (imported after parsing)."""

import sys
from pathlib import Path

import torch
from torchvision.utils import save_image

from sarnet.checkpoint import CheckpointError, load_model, load_run_config
from sarnet.cli import UsageError, checkpoint_file, fail


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
    ckpt = str(checkpoint_file(ckpt_arg))
    model = load_model(ckpt, map_location=device)
    run = load_run_config(ckpt)
    run["ckpt"] = ckpt
    return model, run, device


def run_grid(name: str, args, body) -> Path:
    """Seed, load the checkpoint, body(args, model, run) -> (grid (C, H, W), caption), save, log.
    `run` is load_run_config's dict plus "generator" (seeded by --seed)."""
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
