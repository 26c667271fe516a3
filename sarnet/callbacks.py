"""Callbacks: image grids during training (reconstructions, fixed-z samples and completions -> W&B and
<run>/images/), a line per epoch for train.log and consoles without a terminal, the progress bar; the console."""

import logging
import sys
import time
import warnings
from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.callbacks import RichProgressBar
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_only
from omegaconf import OmegaConf
from torchvision.utils import make_grid, save_image

from sarnet.nn import to_grayscale
from sarnet.progress import duration
from sarnet.sampling import complete, draw_z, sample_images
from sarnet.settings import SampleSettings


def log_grid(trainer, key: str, grid: torch.Tensor, path: Path, caption: str = ""):
    """Save a grid PNG and log that very file to every W&B logger of the trainer (if any).

    The file, not the tensor: wandb casts a float tensor to uint8 without scaling, so [0, 1] grids came out
    black (max 1 of 255); the PNG is save_image's correctly scaled 8-bit image, and W&B then shows the same pixels
    as <run>/images/."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_image(grid, path)
    for lg in trainer.loggers:
        if isinstance(lg, WandbLogger):
            lg.log_image(key=key, images=[str(path)], caption=[f"{caption} (epoch {trainer.current_epoch})"],
                         step=trainer.global_step)


class ImageGrids(L.Callback):
    def __init__(self, every_n_epochs: int = 10, n: int = 16, keep_patches: int = 24, sample: dict | None = None,
                 seed: int = 0):
        self.every_n_epochs, self.n, self.keep_patches, self.seed = every_n_epochs, n, keep_patches, seed
        self.sample = SampleSettings.of(sample)
        self.z = None

    def on_validation_epoch_end(self, trainer, module):
        epoch = trainer.current_epoch
        last = epoch + 1 >= (trainer.max_epochs or 0)
        if trainer.sanity_checking or not trainer.is_global_zero or (epoch % self.every_n_epochs and not last):
            return
        net, out_dir = module.net, Path(trainer.default_root_dir) / "images"
        x = trainer.datamodule.val_x[: self.n].to(module.device)
        gen = torch.Generator().manual_seed(self.seed)
        # A VAE's reconstruction draws z from the global RNG: fork it, so that training's stream does not depend on
        # which epochs made grids (the last epoch of a run always does: a run extended with a larger max_epochs
        # would otherwise go on from another stream than an uninterrupted run, tests/test_train_smoke.py).
        cuda = [module.device.index or 0] if module.device.type == "cuda" else []
        with torch.no_grad(), torch.random.fork_rng(devices=cuda):
            recon = net.activate(net(x).logits)
            pair = torch.cat([to_grayscale(net, x), to_grayscale(net, recon)])  # a classification net: C channels
            log_grid(trainer, "reconstructions", make_grid(pair, nrow=self.n),
                     out_dir / f"reconstructions_epoch{epoch:03d}.png", "top: data, bottom: reconstruction")
            if self.z is None:  # the same z every time: the grids show the model changing, not the noise
                self.z = draw_z(net, self.n, self.sample.z_scale, gen)
            z = None if self.z is None else self.z.to(module.device)
            samples = sample_images(net, self.n, self.sample, gen, z=z)
            log_grid(trainer, "samples", make_grid(samples, nrow=self.n), out_dir / f"samples_epoch{epoch:03d}.png",
                     "fixed z")
            if net.latent_dim and net.ar_net is not None:
                k = min(4, self.n)
                filled, masked = complete(net, x[:k], self.keep_patches, n=6, th=self.sample.th,
                                          generator=torch.Generator().manual_seed(self.seed))
                rows = to_grayscale(net, torch.cat([x[:k, None], masked[:, None], filled], dim=1).flatten(0, 1))
                log_grid(trainer, "completions", make_grid(rows, nrow=8), out_dir / f"completions_epoch{epoch:03d}.png",
                         "original | masked | completions")


class EpochLine(L.Callback):
    """One line per epoch, on rank 0: `epoch 3/200: train/loss 163.4, val/loss 155.2 (2.9 s; ~9 min 35 s left)`,
    logged as "sarnet.epochs" (train.py keeps it off a console that shows a live bar). The ETA is the mean epoch
    time of this launch times the epochs left."""

    keys = ("train/loss", "val/loss", "train/lr")

    def __init__(self):
        self.lines = logging.getLogger("sarnet.epochs")
        self.first_epoch, self.launch_start, self.epoch_start = None, None, None

    def on_train_epoch_start(self, trainer, module):
        self.epoch_start = time.monotonic()
        if self.first_epoch is None:
            self.first_epoch, self.launch_start = trainer.current_epoch, self.epoch_start

    def on_train_epoch_end(self, trainer, module):  # after the epoch's validation
        if not trainer.is_global_zero or self.epoch_start is None:
            return
        now, epoch, total = time.monotonic(), trainer.current_epoch, trainer.max_epochs
        metrics = trainer.callback_metrics
        values = ", ".join(f"{k} {float(metrics[k]):.4g}" for k in self.keys if k in metrics)
        left = (now - self.launch_start) / (epoch + 1 - self.first_epoch) * (total - epoch - 1)  # config: total > 0
        eta = f"; ~{duration(left)} left" if left > 0 else ""
        self.lines.info(f"epoch {epoch + 1}/{total}: {values} ({duration(now - self.epoch_start)}{eta})")


class ProgressBar(RichProgressBar):
    """Lightning's rich bar without `v_num` (the logger's version, a random W&B id here: noise beside the losses)."""

    def get_metrics(self, trainer, pl_module):
        items = super().get_metrics(trainer, pl_module)
        items.pop("v_num", None)
        return items



# the console: each message once, no advertisements, warnings nobody can act on filtered (each with why)
FILTERED_WARNINGS = [
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's own _pytree.py, on a torch API torch deprecates
    r"The number of training batches \(\d+\) is smaller than the logging interval",  # only epoch means are logged
    r".*does not have many workers",  # the splits are tensors in memory (data/datamodules.py): workers add start-up
    r"(Experiment logs|Checkpoint) directory .* exists and is not empty",  # a resumed run continues them on purpose
]


def filter_warnings():  # train.py's console, and a bare Trainer's (sarnet.bench)
    for pattern in FILTERED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)


def no_tips(record) -> bool:  # Lightning's "💡 Tip: ... try installing litlogger / litmodels"
    return not str(record.msg).startswith("💡 Tip")


def no_epoch_lines(record) -> bool:  # a live progress bar shows them
    return record.name != "sarnet.epochs"


def console(trainer) -> tuple:
    """Each message once (Lightning's and torchmetrics' own handlers go: Hydra's console and train.log show them),
    warnings one line each; DDP ranks above 0, which repeat rank 0, only warnings; a line per epoch, on the console
    unless a live progress bar (on a terminal) shows it. -> the Trainer's arguments less the nulls, its callbacks."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(no_tips)  # idempotent
    filter_warnings()
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: \
        f"{category.__name__}: {message} ({Path(filename).name}:{lineno})"
    logging.captureWarnings(True)
    settings = {k: v for k, v in OmegaConf.to_container(trainer, resolve=True).items() if v is not None}
    settings["enable_progress_bar"] = live = settings.get("enable_progress_bar", True) and sys.stdout.isatty()
    for handler in logging.getLogger().handlers:
        if rank_zero_only.rank and "_ddp_process_" not in getattr(handler, "baseFilename", ""):  # srun: one train.log
            handler.setLevel(logging.WARNING)
        if live and isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(no_epoch_lines)  # Hydra's console, not train.log; idempotent
    return OmegaConf.create(settings), [EpochLine(), *([ProgressBar()] if live else [])]
