"""Image grids during training: reconstructions, fixed-z samples and completions -> W&B and <run>/images/."""

from pathlib import Path

import lightning as L
import torch
from lightning.pytorch.loggers import WandbLogger
from torchvision.utils import make_grid, save_image

from sarnet.sampling import complete, draw_z, sample_images, to_grayscale


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
        self.sample = dict(sample or {})
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
                self.z = draw_z(net, self.n, self.sample.get("z_scale", 1.0), gen)
            z = None if self.z is None else self.z.to(module.device)
            samples = sample_images(net, self.n, self.sample, gen, z=z)
            log_grid(trainer, "samples", make_grid(samples, nrow=self.n), out_dir / f"samples_epoch{epoch:03d}.png",
                     "fixed z")
            if net.latent_dim and net.ar_net is not None:
                k = min(4, self.n)
                filled, masked = complete(net, x[:k], self.keep_patches, n=6, th=self.sample.get("th"),
                                          generator=torch.Generator().manual_seed(self.seed))
                rows = to_grayscale(net, torch.cat([x[:k, None], masked[:, None], filled], dim=1).flatten(0, 1))
                log_grid(trainer, "completions", make_grid(rows, nrow=8), out_dir / f"completions_epoch{epoch:03d}.png",
                         "original | masked | completions")
