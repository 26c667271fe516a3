"""The commands' shared torch side: loading a checkpoint, drawing, saving and logging a figure (imported after
parsing)."""

import io
from pathlib import Path

import matplotlib
import torch
from PIL import Image, ImageDraw, ImageFont

from sarnet.checkpoint import CheckpointError, load_model, load_run_config
from sarnet.cli import UsageError, checkpoint_file, fail
from sarnet.io import atomic_write
from sarnet.settings import th_text

# matplotlib's own copy of DejaVu Sans: the same glyphs, so the same figure, on every machine
FONT = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSans.ttf"


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


def real_image(run: dict, split: str, index: int, root=None, flag="--index") -> torch.Tensor:
    """Image `index` (the command's `flag`) of the run's data (its dataset and class filter), as (1, C, H, W)."""
    from sarnet.data import DataError, real_images
    data = run["data"]
    try:
        x = real_images(root or data["root"], data["dataset"], data["classes"], split)
    except (DataError, OSError) as e:
        raise UsageError(f"cannot read the {data['dataset']} {split} split under {root or data['root']}: {e} "
                         f"(prepare it with `make data` or pass --root)") from e
    if not 0 <= index < len(x):
        raise UsageError(f"{flag} {index}: the {split} split of {data['dataset']} "
                         f"(classes {data['classes']}) has {len(x)} images")
    return x[index:index + 1]


def log_wandb(command: str, args, run: dict, summary: dict | None = None, image: Path | None = None,
              caption: str = ""):
    """With --wandb: one W&B run (offline unless a key and the server are there: sarnet.tracking.choose_mode) in the
    training run's project and group, job_type=eval, named after the training run and the command: a re-scored FID
    or a k=5000 likelihood sits beside the run it scores. Its config: the command's arguments and the training
    run's W&B id; its summary: `summary`; `image`: logged under the command's name."""
    if not args.wandb:
        return
    import wandb

    from sarnet import tracking
    from sarnet.io import read_json

    train = read_json(Path(run["run_dir"]) / tracking.RUN_FILE)  # absent for a checkpoint copied out of its run dir
    wandb.init(mode=tracking.choose_mode(), dir=str(run["run_dir"]), project=train.get("project") or "sarnet",
               group=train.get("group"), job_type="eval", name=f"{train.get('name') or Path(run['ckpt']).stem} "
               f"{command}", tags=[command], config={**vars(args), "train_run_id": train.get("id")},
               settings=wandb.Settings(silent=True, init_timeout=30))
    if image is not None:
        wandb.log({command: wandb.Image(str(image), caption=caption)})
    wandb.run.summary.update(summary or {})
    wandb.finish()


def load_run(ckpt_arg: str, device_arg: str = "auto", z_scale=None):
    """--ckpt (a .ckpt file or a run dir), --device and --z-scale -> (model, run, device), the one way every script
    loads. Bad input raises CheckpointError or UsageError, which the scripts print as one line."""
    device = pick_device(device_arg)
    ckpt = str(checkpoint_file(ckpt_arg))
    model = load_model(ckpt, map_location=device)
    if z_scale is not None and not model.latent_dim:  # else it would be ignored without a word
        raise UsageError(f"--z-scale: this checkpoint's {type(model).__name__} has no latent z to scale; drop it")
    run = load_run_config(ckpt)
    run["ckpt"] = ckpt
    return model, run, device


def figure(panels, nrow, scale=4, title=None, row_labels=None, col_labels=None, cell_labels=None, pad=2,
           pad_value=0.5) -> Image.Image:
    """Panels (N, C, H, W) in [0, 1] (C = 1 grey, 3 RGB) -> an RGB image: rows of `nrow` panels, each pixel a
    scale x scale block, `pad` pixels (x scale) of pad_value around every panel; a title above (wrapped to the
    width), row labels at the left, column labels above the columns, a label above each panel. Labels are black
    on white margins that exist only where there is a label, so the grid is the image's bottom-right corner."""
    n, _, h, w = panels.shape
    ncol, font = min(nrow, n), ImageFont.truetype(str(FONT), min(20, max(12, 5 * scale)))
    nrows, line, gap, cw, ch = -(-n // ncol), font.size * 4 // 3, pad * scale, w * scale, h * scale
    band = line if cell_labels else 0  # a label strip above each row of panels, inside the grid
    grid = Image.new("RGB", (ncol * (cw + gap) + gap, nrows * (ch + band + gap) + gap),
                     (round(255 * pad_value),) * 3)
    pixels = panels.detach().float().cpu().mul(255).add(0.5).clamp(0, 255).to(torch.uint8)  # save_image's rounding
    pixels = pixels.expand(-1, 3, -1, -1) if pixels.shape[1] == 1 else pixels
    draw = ImageDraw.Draw(grid)
    for i, tile in enumerate(pixels):
        r, c = divmod(i, ncol)
        x, y = gap + c * (cw + gap), gap + r * (ch + band + gap) + band
        grid.paste(Image.fromarray(tile.permute(1, 2, 0).numpy()).resize((cw, ch), Image.NEAREST), (x, y))
        if cell_labels:
            draw.text((x + cw // 2, y - 1), str(cell_labels[i]), fill="black", font=font, anchor="md")
    left = round(max(font.getlength(str(t)) for t in row_labels)) + 2 * gap if row_labels else 0
    titles = wrap(title, font, left + grid.width - 2 * gap) if title else []
    top = line * (len(titles) + bool(col_labels))
    image = Image.new("RGB", (left + grid.width, top + grid.height), "white")
    image.paste(grid, (left, top))
    draw = ImageDraw.Draw(image)
    for k, text in enumerate(titles):
        draw.text((image.width // 2, k * line), text, fill="black", font=font, anchor="ma")
    for c, text in enumerate(col_labels or []):
        draw.text((left + gap + c * (cw + gap) + cw // 2, top - 2), str(text), fill="black", font=font, anchor="md")
    for r, text in enumerate(row_labels or []):
        y = top + gap + r * (ch + band + gap) + band + ch // 2
        draw.text((left - gap, y), str(text), fill="black", font=font, anchor="rm")
    return image


def wrap(text: str, font, width: int) -> list[str]:
    """Words into lines no wider than `width` pixels (a longer word gets a line of its own)."""
    lines = []
    for word in text.split():
        if lines and font.getlength(f"{lines[-1]} {word}") <= width:
            lines[-1] += f" {word}"
        else:
            lines.append(word)
    return lines


def data_label(run) -> str:
    """'MNIST [5]': the data a figure's images come from (an index counts within these classes)."""
    data = run["data"]
    name = {"mnist": "MNIST", "fashion_mnist": "FashionMNIST"}.get(data["dataset"], data["dataset"])
    return name + (f" {list(data['classes'])}" if data["classes"] else "")


def run_label(model, run) -> str:
    """'SarNetVAE L=128, MNIST [5]': the model and the data a figure comes from, for its title."""
    return f"{type(model).__name__}{f' L={model.latent_dim}' if model.latent_dim else ''}, {data_label(run)}"


def draw_label(model, z_scale, th) -> str:
    """'z ~ N(0, 0.6667² I), th 0.105' (the z only for a model with a latent; th as --th takes it: 'th none')."""
    z = "" if not model.latent_dim else "z ~ N(0, I), " if z_scale == 1 else f"z ~ N(0, {z_scale:.4g}² I), "
    return f"{z}th {th_text(th)}"


def title_of(args, default: str):
    """--title: the command's own short caption unless one was given; '' draws none."""
    return default if args.title is None else args.title or None


def run_grid(name: str, args, body) -> Path:
    """Seed, load the checkpoint, body(args, model, run) -> (PIL image, caption), save (atomically), log.
    `run` is load_run_config's dict plus "generator" (seeded by --seed)."""
    try:
        torch.manual_seed(args.seed)
        model, run, _ = load_run(args.ckpt, args.device, getattr(args, "z_scale", None))
        args.ckpt = run["ckpt"]
        run["generator"] = torch.Generator().manual_seed(args.seed)  # on the CPU: same draws on any device
        image, caption = body(args, model, run)
        default = run["run_dir"] / "images" / f"{name}_{Path(args.ckpt).stem}.png"
        out = Path(args.out) if args.out else fresh_path(default)
        out.parent.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        image.save(buf, format="png")
        atomic_write(out, buf.getvalue())
        log_wandb(name, args, run, image=out, caption=caption)
    except (CheckpointError, UsageError, ValueError) as e:  # ValueError: a request the sampler refuses
        fail(args.prog, e)
    print(f"{caption} -> {out}")
    return out
