"""The checks a run passes before any work, each refusal one line naming the field: check_fields torch-free (the
fields, the files, the rules between plain fields), then validate builds the net, module and data module, each
constructor checking its own rules, and checks the few rules between two built objects."""

import os
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

from sarnet.checkpoint import resume_path  # torch-free
from sarnet.data.sources import FOLDERS, DataError, check_raw
from sarnet.fields import ConfigError, check, check_nodes_and_fields, plain
from sarnet.settings import SampleSettings, th_text

# FID generates n_gen x n_sets x (1 + extra thresholds) images; the thesis' protocol is 10 x 10,000. One FID set of
# 10,000 images takes 4.15 s on one CPU thread (docs/results/bench.jsonl, case fid): 1e8 images take ~12 h.
FID_IMAGES_CAP, FID_IMAGES_PER_S = 10**8, 2400


def module_metrics(latent: bool, stages) -> set:
    """What sarnet.module logs in each stage: loss, recon, kld with a latent, mse outside training."""
    return {f"{stage}/{name}" for stage in stages for name in ["loss", "recon", *["kld"] * latent,
                                                                *["mse"] * (stage != "train")]}


def check_fields(cfg: DictConfig):
    check_nodes_and_fields(cfg)
    fid, data, validates = cfg.fid, cfg.data, OmegaConf.select(cfg, "trainer.limit_val_batches") != 0
    images = fid.n_gen * fid.n_sets * (1 + len(fid.get("extra_th") or []))
    check(images <= FID_IMAGES_CAP, "fid.n_gen", fid.n_gen, f"fid.n_gen x fid.n_sets x (1 + len(fid.extra_th)) "
          f"= {images:.3g} images would take ~{images / FID_IMAGES_PER_S / 3600:.3g} h at {FID_IMAGES_PER_S} "
          f"images/s (an FID set on one CPU thread); at most {FID_IMAGES_CAP:.0e} (the thesis: 10 x 10000)")
    check(fid.knn.n == 0 or fid.knn.n >= 2 * fid.knn.k, "fid.knn.n", fid.knn.n, "must be 0 (off) or >= 2 * k")
    check(data.get("val_size") != 0 or not validates or cfg.get("eval_ckpt") != "best", "eval_ckpt", "best",
          "picks the weights with the lowest val/loss, and data.val_size=0 validates on the test split: use "
          "eval_ckpt=last")
    saved = [n for n in (cfg.get("callbacks") or {}).values()  # checkpoint callbacks that keep a best one
             if n and "dirpath" in n and n.get("monitor") and n.get("save_top_k") != 0]
    check(cfg.get("eval_ckpt") != "best" or saved, "eval_ckpt", "best", "needs a checkpoint callback with a monitor "
          "and save_top_k != 0, such as callbacks.checkpoint: restore it, or use eval_ckpt=last")
    check(cfg.get("init_ckpt") is None or cfg.get("ckpt_path") is None, "init_ckpt", cfg.get("init_ckpt"),
          f"cannot go with ckpt_path={cfg.get('ckpt_path')}: ckpt_path resumes a run in its own run dir, init_ckpt "
          f"starts a new run from a checkpoint's weights; give one of them")
    for key in ("ckpt_path", "init_ckpt"):  # either may name a run dir: its checkpoints/last.ckpt
        path = cfg.get(key)
        check(path is None or isinstance(path, str) and resume_path(path).is_file(), key, path,
              "is not a checkpoint file: give an existing .ckpt, or a run dir holding checkpoints/last.ckpt")
    metric, latent = cfg.get("optimized_metric"), bool(cfg.model.net.get("latent_dim"))  # a sweeper gets it
    tests = cfg.get("run_test") and cfg.trainer.get("limit_test_batches") != 0
    names = module_metrics(latent, ["train", *["val"] * validates, *["test"] * bool(tests)])
    names |= {"train/lr"} if cfg.model.get("scheduler") else set()  # logged beside the losses with a scheduler
    if fid.enabled:  # what sarnet.train.evaluate reports
        ths = ["", *(f"@th={th_text(t)}" for t in fid.get("extra_th") or [])]
        names |= {f"fid{at}/{s}" for at in ths for s in ("mean", "std")} | ({"knn/accuracy"} if fid.knn.n else set())
    if OmegaConf.select(cfg, "likelihood.enabled"):  # sarnet.likelihood.flat_metrics's, the bounds' with a latent
        names |= {f"test/{n}" for n in ["nll", "nll_se", "bpd", "nll_images", *["elbo_nll", "elbo_nll_se", "kl",
                                                                                 "iwae_k"] * latent]}
    check(metric is None or metric in names, "optimized_metric", metric, f"must be null or a metric this run logs: "
          f"{sorted(names)}")
    folder = data._target_.rsplit(".", 1)[-1].removesuffix("DataModule")  # MNISTDataModule: torchvision's MNIST
    if folder in FOLDERS.values() and not data.get("download") and data.get("static_dir") is None:
        try:  # the data's raw files, unless fetched (data.download) or not read (data.static_dir)
            check_raw(Path(data.root) / folder / "raw")
        except DataError as e:
            field = "data_dir" if OmegaConf.to_container(data)["root"] == "${data_dir}" else "data.root"
            raise DataError(f"{field}={data.root}: {e}") from None


def validate(cfg: DictConfig):
    """check_fields, then what a run builds before reading data -> the net; the first complaint is one line."""
    check_fields(cfg)
    import torch

    from sarnet.likelihood import LikelihoodError, check_setup

    with torch.random.fork_rng(devices=[]):  # the net's initial weights from cfg.seed's stream alone, the global
        torch.manual_seed(cfg.seed)          # RNG left for seed_everything to set before the data and training draws
        net = build(cfg.model.net, "model.net")
    build(cfg.model, "model", net=net)  # SarnetModule: its loss, optimizer and scheduler, against the net
    data = build(cfg.data, "data", DataError)
    if tuple(net.image_shape) != data.image_shape:  # the data's shape or the net's: name both
        q, c = data.quantize, data.image_shape[0]
        raise ConfigError(f"data.quantize={q} and model.net.geometry={plain(cfg.model.net.get('geometry'))} do not "
                          f"fit: the data are {c} x 28 x 28 images{' (one-hot classes)' * bool(q)}, the net reads "
                          f"{' x '.join(map(str, net.image_shape))}: its geometry must start with [28, {c}, patch]" +
                          "; or use data.quantize=null" * bool(q))
    try:
        sample = SampleSettings.of(cfg.sample).check_fits(net.out_activation)
        if OmegaConf.select(cfg, "likelihood.enabled"):
            check_setup(net, data)
    except LikelihoodError as e:
        raise ConfigError(f"likelihood.enabled=true: {e}") from None
    except ValueError as e:
        raise ConfigError(f"sample.{e}") from None
    check(net.latent_dim or sample.z_scale == 1, "sample.z_scale", sample.z_scale, "scales the latent z, which this "
          "model.net has none of: drop it")  # `sarnet sample --z-scale` refuses it too
    check_trainer(cfg.trainer, data)
    validates, scheduler = cfg.trainer.get("limit_val_batches") != 0, OmegaConf.select(cfg, "model.scheduler._target_")
    check(validates or "ReduceLROnPlateau" not in str(scheduler), "model.scheduler", scheduler, "steps on val/loss, "
          "which trainer.limit_val_batches=0 never computes: use scheduler=none, or validate")
    logged = module_metrics(bool(net.latent_dim), ["train", "val"]) | {"step", "epoch"}  # and Lightning's counters
    for name, node in (cfg.get("callbacks") or {}).items():  # they would fail after training
        if node is not None and node.get("monitor") is not None:
            check(node.monitor in logged and (validates or not node.monitor.startswith("val/")),
                  f"callbacks.{name}.monitor", node.monitor, f"must be a metric this model logs: {sorted(logged)} "
                  f"(val/ ones need trainer.limit_val_batches != 0)")
        if node is not None and "keep_patches" in node and net.ar_net is not None:
            check(node.keep_patches <= net.ar_net.n_patches, f"callbacks.{name}.keep_patches", node.keep_patches,
                  f"must be an int in 0..{net.ar_net.n_patches} (this net's patches)")
    return net


def check_trainer(trainer: DictConfig, data):
    """What this machine and these data can serve: the GPU asked for, more nodes only where a cluster launched them,
    validation every N batches only within an epoch."""
    import torch
    from lightning.fabric.accelerators import CUDAAccelerator, MPSAccelerator  # fork-safe, unlike torch.cuda's
    from lightning.fabric.plugins.environments import LSFEnvironment, SLURMEnvironment, TorchElasticEnvironment

    accelerator = trainer.get("accelerator")
    found = {"cuda": CUDAAccelerator.is_available(), "mps": MPSAccelerator.is_available()}
    check(found.get(accelerator, accelerator != "gpu" or any(found.values())), "trainer.accelerator", accelerator,
          "this machine has no such GPU: use trainer.accelerator=cpu (or trainer=cpu), or auto (a GPU where found)")
    nodes = trainer.get("num_nodes") or 1  # more, on one machine, would wait for the others forever
    check(nodes == 1 or "NODE_RANK" in os.environ or any(e.detect() for e in (SLURMEnvironment,
                                                                           TorchElasticEnvironment, LSFEnvironment)),
          "trainer.num_nodes", nodes, "needs a cluster launch (SLURM: -m hydra/launcher=slurm; torchrun): on one "
          "machine use trainer.devices")
    interval, limit = trainer.get("val_check_interval"), trainer.get("limit_train_batches")
    if type(interval) is int:  # Lightning refuses it only inside fit: the split counted here, the global RNG untouched
        with torch.random.fork_rng(devices=[]):
            data.setup("fit")
        batches = len(data.train_dataloader())
        batches = min(batches, limit) if type(limit) is int else int(batches * limit) if limit is not None else batches
        check(interval <= batches, "trainer.val_check_interval", interval, f"is more than this run's {batches} "
              f"training batches an epoch: give at most {batches}, or a fraction of the epoch (e.g. 0.5)")


def build(node: DictConfig, field: str, error: type[Exception] = ConfigError, **kwargs):
    """instantiate(node, **kwargs), its constructor's complaint one line naming the field, not Hydra's multi-line
    wrapper around it."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except Exception as e:  # noqa: BLE001 -- whatever the constructor raised
        inner = e
        while inner.__cause__ is not None:  # Hydra's InstantiationException wraps what the constructor raised
            inner = inner.__cause__
        cause = (str(inner).strip() or type(inner).__name__).splitlines()[0]
        keys = [k for k in node if cause.startswith(f"{k}=")]
        if keys or cause.startswith(("loss.", "model.", "data.")):  # its own key, or a nested node's full name
            message = f"{field}.{cause}" if keys else cause
        else:
            message = f"{field}: {type(inner).__name__}: {cause}"
        raise error(message) from None if isinstance(inner, (ValueError, TypeError)) else e  # keep the unexpected
