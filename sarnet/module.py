"""The LightningModule: a thin training shell over a plain SarNet / SarNetVAE / ConvVAE `nn.Module`."""

import lightning as L
import torch

from sarnet.losses import ReconstructionLoss, kl_divergence
from sarnet.nn import to_grayscale
from sarnet.nn.vae import fp32


class NonFiniteLossError(RuntimeError):
    pass


class SarnetModule(L.LightningModule):
    """Losses are per image (reconstruction + beta * KL for the VAEs) and logged per image.

    batch_reduction: how the per-image losses of a batch form the objective; "sum" is the reference's VAE
    objective (BCE-sum + KLD-sum over the batch), "mean" the simple-SarNET reference's.
    scheduler: None (a constant learning rate, the reference's) or a partial lr scheduler taking the optimizer,
    stepped once per epoch after validation; a ReduceLROnPlateau reads val/loss, the metric best.ckpt is chosen by
    (conf/scheduler/).
    eval_seed: the VAEs' validation and test losses draw z with noise that is a function of (eval_seed, the
    image's index in its split) alone (`image_noise`), so they do not depend on batching, on how DDP shards the
    split, or on what drew from the RNG before. Every logged value is synced over DDP ranks: the whole split's.
    """

    def __init__(self, net: torch.nn.Module, loss: ReconstructionLoss, optimizer, beta: float = 1.0,
                 batch_reduction: str = "sum", scheduler=None, eval_seed: int = 0):
        super().__init__()
        check_interface(net)
        if batch_reduction not in ("sum", "mean"):
            raise ValueError(f"model.batch_reduction={batch_reduction!r} must be 'sum' or 'mean'")
        out_activation, loss_name = net.out_activation, f"{type(loss).__module__}.{type(loss).__name__}"
        if loss.needs_sigmoid and out_activation != "sigmoid":
            raise ValueError(f"loss.kind=bce needs a sigmoid output but model.net.out_activation={out_activation!r};"
                             f" use loss=mse/l1/l1_ssim/mse_ssim or set model.net.out_activation=sigmoid")
        if getattr(loss, "needs_softmax", False) != (out_activation == "softmax"):
            raise ValueError(f"loss._target_={loss_name} does not fit model.net.out_activation={out_activation!r}: "
                             f"a softmax (classification) net trains with loss=ce or ce_ssim, and only it does")
        if getattr(loss, "needs_softmax", False) and net.image_shape[0] == 1 and net.out_shape[0] != 2:
            raise ValueError(f"model.net.geometry={net.config.get('geometry')} is invalid: a softmax net reading grey "
                             f"images (1 channel) learns the soft targets (1 - x, x), so it ends with [28, 2, patch] "
                             f"(experiment=cls_sarnet_prob)")
        if net.latent_dim and not hasattr(net, "encoder"):  # it would fail at its first step, wanting z
            raise ValueError(f"model.net.latent_dim={net.latent_dim}: a {type(net).__name__} alone is given no z "
                             f"(only SarNetVAE's encoder makes one): use model.net.latent_dim=0, or model=sarnet_vae")
        if optimizer is not None:  # their own arguments, refused now rather than at the first step
            key = "optimizer"
            try:
                made = optimizer(params=[torch.zeros(1, requires_grad=True)])
                key = "scheduler"
                if scheduler is not None:
                    scheduler(made)
            except (TypeError, ValueError, IndexError, RuntimeError) as e:  # IndexError: betas=[0.9]
                raise ValueError(f"model.{key}: {type(e).__name__}: {e}") from None
        self.net, self.loss, self.optimizer_factory = net, loss, optimizer
        self.beta, self.batch_reduction, self.scheduler_factory = beta, batch_reduction, scheduler
        self.eval_seed = eval_seed

    def forward(self, x):
        return self.net(x)

    def _step(self, batch, stage: str, batch_idx: int = 0):
        x = batch[0] if isinstance(batch, (list, tuple)) else batch
        index = batch[2] if isinstance(batch, (list, tuple)) and len(batch) > 2 else None  # DataModule's
        if stage != "train" and self.net.latent_dim and index is not None:
            out = self.net(x, eps=image_noise(index, self.net.latent_dim, self.eval_seed).to(x.device, x.dtype))
        else:
            out = self.net(x)
        # trainer.precision=bf16-mixed runs the net's matmuls and convolutions in bf16 (Lightning's autocast); the
        # loss is taken in float32 from the bf16 logits on: per-pixel terms, their sum over 784 pixels (a bf16
        # sum keeps ~3 significant digits of ~100 nats), SSIM's E[x^2] - E[x]^2 (whose band-matrix matmuls autocast
        # would otherwise run in bf16), the softmax of the classification nets, the KL and the batch reduction.
        # mu and logvar come float32 from the encoder; the optimizer and its state are float32 (Lightning keeps
        # float32 weights and steps them outside autocast); the masks are float32 buffers (0/1, exact anyway).
        with torch.autocast(x.device.type, enabled=False):
            logits = fp32(out.logits)
            output = self.net.activate(logits)
            recon = self.loss(logits, output, x)
            terms = {"recon": recon}
            if out.mu is not None:
                terms["kld"] = kl_divergence(fp32(out.mu), fp32(out.logvar))
            per_image = recon + self.beta * terms["kld"] if "kld" in terms else recon
            objective = per_image.sum() if self.batch_reduction == "sum" else per_image.mean()
        if stage == "train" and not torch.isfinite(objective):
            bad = [name for name, value in terms.items() if not torch.isfinite(value).all()]
            raise NonFiniteLossError(f"non-finite training loss at epoch {self.current_epoch}, step "
                                     f"{self.global_step} (term: {', '.join(bad) or 'total'}); the last good "
                                     f"checkpoint is kept: lower the learning rate or check the data")
        n = x.shape[0]
        if stage == "train":
            self._log_train_epoch(per_image, terms, n, batch_idx)
            return objective
        # sync_dist: Lightning sums value * batch_size and batch_size over the ranks, so the mean is the split's
        self.log(f"{stage}/loss", per_image.mean(), batch_size=n, prog_bar=stage != "test", on_epoch=True,
                 on_step=False, sync_dist=True)
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value.mean(), batch_size=n, on_epoch=True, on_step=False, sync_dist=True)
        if output.shape != x.shape:  # a probability net's C class probabilities of a grey image: its grey levels
            output = to_grayscale(self.net, output)
        self.log(f"{stage}/mse", (output - x).pow(2).mean(), batch_size=n, on_epoch=True, on_step=False,
                 sync_dist=True)
        return objective

    def _log_train_epoch(self, per_image, terms, n, batch_idx):
        """Per-image epoch means of the training terms, summed here and logged once, on the epoch's last batch:
        three self.log calls per step cost ~8% of a CPU training epoch. Same values, same time of logging."""
        if batch_idx == 0:
            self._train_sums, self._train_count = {}, 0
        for name, value in (("loss", per_image), *terms.items()):
            self._train_sums[name] = self._train_sums.get(name, 0.0) + value.detach().sum()
        self._train_count += n
        trainer = getattr(self, "_trainer", None)
        if trainer is None or batch_idx + 1 >= trainer.num_training_batches:
            for name, total in self._train_sums.items():
                self.log(f"train/{name}", total / self._train_count, prog_bar=name == "loss", on_epoch=True,
                         on_step=False, batch_size=self._train_count, sync_dist=True)
            if self.scheduler_factory is not None and trainer is not None:  # the epoch's lr, beside its losses
                self.log("train/lr", float(trainer.optimizers[0].param_groups[0]["lr"]), on_epoch=True,
                         on_step=False, batch_size=self._train_count, sync_dist=True)

    def training_step(self, batch, batch_idx):
        return self._step(batch, "train", batch_idx)

    def validation_step(self, batch, batch_idx):
        return self._step(batch, "val")

    def test_step(self, batch, batch_idx):
        return self._step(batch, "test")

    def configure_optimizers(self):
        # Only the network's parameters: anything else hung on the module (e.g. an FID feature net) is not trained.
        optimizer = self.optimizer_factory(params=self.net.parameters())
        if self.scheduler_factory is None:
            return optimizer
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": self.scheduler_factory(optimizer),
                                                         "interval": "epoch", "monitor": "val/loss"}}

    def on_save_checkpoint(self, checkpoint):
        checkpoint["sarnet"] = {"net": self.net.config, "format": 1}  # sarnet.checkpoint.load_model


def check_interface(net: torch.nn.Module):
    """What training, the samplers and the commands ask of a net (docs/usage.md#your-own-model), refused in one line
    before any data is read rather than as a traceback mid-run; and that its config rebuilds it, as load_model will
    rebuild it from every checkpoint of the run."""
    from hydra.utils import instantiate

    needs = ["config", "latent_dim", "image_shape", "out_activation", "ar_net", "activate", "effective_parameters"]
    if getattr(net, "latent_dim", 0) and getattr(net, "ar_net", 0) is None:
        needs.append("decoder")  # a latent model that is not autoregressive samples through decoder(z)
    if missing := [name for name in needs if not hasattr(net, name)]:
        raise TypeError(f"net={type(net).__name__} lacks {', '.join(missing)}: every net answers the interface of "
                        f"docs/usage.md#your-own-model")
    try:
        with torch.random.fork_rng(devices=[]):  # the twin's initial weights draw nothing from the caller's stream
            twin, why = instantiate(net.config), ""
    except Exception as e:  # noqa: BLE001 -- whatever the import or the constructor says
        twin, why = None, f" ({type(e).__name__}: {(str(e).splitlines() or [''])[0]})"
    shapes = lambda m: {k: v.shape for k, v in m.state_dict().items()}
    if type(twin) is not type(net) or shapes(twin) != shapes(net):
        raise TypeError(f"net={type(net).__name__}: its config {net.config} does not rebuild it{why}: its class must "
                        f"be importable and take every key of config (docs/usage.md#your-own-model)")


def count_parameters(net: torch.nn.Module) -> dict:
    dense = sum(p.numel() for p in net.parameters())
    return {"dense": dense, "effective": int(net.effective_parameters())}


def image_noise(index: torch.Tensor, latent_dim: int, seed: int) -> torch.Tensor:
    """N(0, I) noise (len(index), latent_dim), row i a function of (seed, index[i]) alone: a generator per image
    (4 us each on a CPU), so the noise of an image is the same in any batch, shard or process."""
    return torch.stack([torch.randn(latent_dim, generator=torch.Generator().manual_seed(seed * 1_000_003 + int(i)))
                        for i in index.tolist()])
