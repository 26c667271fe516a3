"""Resume exactly or not at all: whole checkpoints with finite weights, each holding the run's config, RNG streams and
metrics; a relaunch that would train something else refused; metrics.csv continued."""

import csv
import json
import logging
import os
import time
from io import BytesIO
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.fabric.utilities.seed import _collect_rng_states, _set_rng_states
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from sarnet.checkpoint import stored_run
from sarnet.fields import ConfigError, plain
from sarnet.io import atomic_write
from sarnet.rundir import RunDirError

log = logging.getLogger("sarnet")

# What a resumed run may not change: the model, the loss, the data and the trainer settings that shape each step;
# where the data lie, how they load and how long to train (max_epochs extends a run) may (model.loss is ${loss}).
# A checkpoint also carries how its run samples and scores FID (load_run_config) and the weights it started from.
DRIFT_KEYS = ("latent_dim", "seed", "model", "loss", "data", "trainer.limit_train_batches",
              "trainer.accumulate_grad_batches", "trainer.gradient_clip_val", "trainer.precision")
FREE_KEYS = ("data.root", "data.num_workers", "data.pin_memory", "data.download", "model.loss")
CARRIED_KEYS = ("sample", "fid", "init_ckpt")
OPTIMIZER = "model.optimizer."


class NonFiniteWeightsError(RuntimeError):
    pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints through atomic_write (Lightning's writer copies a temp file from $TMPDIR, across filesystems on
    clusters: a SIGKILL mid-copy truncates last.ckpt), and never with non-finite weights over the last good ones."""

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        if bad := [k for k, v in checkpoint.get("state_dict", {}).items()
                   if v.is_floating_point() and not torch.isfinite(v).all()]:
            raise NonFiniteWeightsError(f"non-finite weights at epoch {checkpoint.get('epoch')}, step "
                                        f"{checkpoint.get('global_step')} ({', '.join(bad[:3])}): not writing "
                                        f"{path}, the last good checkpoint is kept; lower the learning rate")
        buffer, path = BytesIO(), Path(path)
        torch.save(checkpoint, buffer)
        for stale in path.parent.glob(f".{path.name}.*.part"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)
        try:
            atomic_write(path, buffer.getbuffer())
        except OSError as e:
            raise RunDirError(f"{path}: cannot write the checkpoint ({e.strerror}); the last good checkpoint is "
                              f"kept: free space or pick a writable hydra.run.dir") from None


def continue_csv(loggers, ckpt_path):
    """CSVLogger deletes the metrics.csv it finds: put back its rows up to the checkpoint's epoch (later ones are of
    the epoch being redone), and that epoch's train row from the checkpoint if the file missed it."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    epoch, pending = ckpt["epoch"], stored_run(ckpt).get("train_row")
    for lg in (lg for lg in loggers if isinstance(lg, CSVLogger)):
        path = Path(lg.log_dir) / "metrics.csv"
        rows = [{k: v for k, v in r.items() if v != ""} for r in csv.DictReader(
            path.read_text().splitlines() if path.is_file() else []) if r.get("epoch") and float(r["epoch"]) <= epoch]
        if pending and not any(float(r["epoch"]) == epoch and k in r for r in rows for k in pending
                               if k.startswith("train/")):
            rows.append(dict(pending))
        lg.experiment.metrics += rows  # the writer, made here, deletes the old file
        lg.save()


def run_config(cfg) -> dict:
    """The resolved config a checkpoint carries: DRIFT_KEYS and CARRIED_KEYS, the data root made absolute."""
    out = {key: plain(OmegaConf.select(cfg, key, default=None)) for key in DRIFT_KEYS + CARRIED_KEYS}
    if (out["data"] or {}).get("root"):
        out["data"]["root"] = os.path.abspath(out["data"]["root"])
    return out


def _flat(value, prefix=""):
    if not isinstance(value, dict):
        return {prefix: value}
    return {k: v for key, sub in value.items() for k, v in _flat(sub, f"{prefix}.{key}" if prefix else key).items()}


def check_drift(cfg, ckpt: dict, ckpt_path) -> dict:
    """Refuse in one line a resume whose config trains something else; optimizer settings may change with
    resume_override_optimizer=true, its class never (its state would not fit). -> {field: (old, new)} of those."""
    if "rng" not in stored_run(ckpt):  # without it the run would go on, but not as if never stopped
        raise ConfigError(f"resume refused: {ckpt_path} lacks the RNG state of an exact resume (not written by this "
                          f"train.py's ResumeState); start a new run from its weights: init_ckpt={ckpt_path}")
    trained, epochs = ckpt["epoch"] + 1, OmegaConf.select(cfg, "trainer.max_epochs")
    if epochs not in (None, -1) and epochs < trained:  # Lightning's refusal would be a traceback after the set-up
        raise ConfigError(f"trainer.max_epochs={epochs} is invalid: {ckpt_path} has reached epoch {trained}, and a "
                          f"resumed run may only grow max_epochs; or start a new run from its weights: init_ckpt="
                          f"{ckpt_path}")
    old, new = _flat(stored_run(ckpt)["config"]), _flat(run_config(cfg))
    diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k.startswith(DRIFT_KEYS) and not k.startswith(FREE_KEYS)}
    optimizer = {k: v for k, v in diff.items() if k.startswith(OPTIMIZER)}
    same_class = OPTIMIZER + "_target_" not in diff  # else its state would not fit
    free = same_class and cfg.resume_override_optimizer
    if drift := {k: v for k, v in diff.items() if k not in optimizer or not free}:
        fields = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in drift.items())
        hint = "; optimizer settings may change with resume_override_optimizer=true" * bool(optimizer and same_class)
        weights = f" (init_ckpt={ckpt_path} starts one from its weights)" * (not any(k.startswith("model.net.")
                                                                                      for k in drift))
        raise ConfigError(f"resume refused: the config differs from the one {ckpt_path} was trained with "
                          f"({fields}); revert it, or start a new run in a new dir{weights}{hint}")
    for k, (a, b) in optimizer.items():
        log.warning("resume_override_optimizer=true: %s %r -> %r, applied to the restored optimizer", k, a, b)
    return optimizer


class ResumeState(L.Callback):
    """What a resumed run needs to go on as if never stopped, in each checkpoint's "sarnet_run": the RNG streams (the
    data order is the DataModule's state), the config (check_drift), the metrics (a finished run relaunched reports
    them), the seconds of all launches, the train row Lightning logs after the epoch's checkpoint (continue_csv); and
    the ReduceLROnPlateau step Lightning takes after that checkpoint and skips on resume (an lr drop an epoch late)."""

    def __init__(self, cfg=None, optimizer_override: dict | None = None, earlier: dict | None = None):
        self.config = json.dumps(run_config(cfg)) if cfg is not None else None
        self.override, self.earlier, self.ended = optimizer_override or {}, earlier or {}, None
        self.started, self.earlier_s = time.time(), self.earlier.get("wall_time_s", 0.0)

    def on_train_epoch_end(self, trainer, pl_module):  # before ModelCheckpoint's: Lightning runs those last
        self.ended = trainer.current_epoch

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        for lg in trainer.loggers:  # the file then holds every row before this checkpoint but the train row
            lg.save()
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        row = {k: v for k, v in metrics.items() if k.startswith("train/")} | {
            "epoch": trainer.current_epoch, "step": trainer.global_step - 1}  # Lightning's epoch-end step
        rng = _collect_rng_states()  # numpy's keys as a tensor: checkpoints are read with weights_only
        rng["numpy"] = [rng["numpy"][0], torch.from_numpy(rng["numpy"][1].astype(np.int64)), *rng["numpy"][2:]]
        checkpoint["sarnet_run"] = {"config": self.config, "metrics": metrics, "rng": rng,
                                    "train_row": row if self.ended == trainer.current_epoch else None,
                                    "wall_time_s": self.earlier_s + time.time() - self.started}

    def on_train_start(self, trainer, pl_module):
        if rng := self.earlier.get("rng"):  # resuming: after seed_everything and the sanity check
            kind, keys, *rest = rng["numpy"]  # CUDA's streams only on as many GPUs as wrote them
            cuda = rng["torch.cuda"] if len(rng["torch.cuda"]) == torch.cuda.device_count() else []
            _set_rng_states(rng | {"numpy": (kind, keys.numpy().astype(np.uint32), *rest), "torch.cuda": cuda})
            for config in trainer.lr_scheduler_configs:  # last_epoch counts the steps taken, one per epoch
                if config.reduce_on_plateau and config.scheduler.last_epoch < trainer.current_epoch:
                    pl_module.lr_scheduler_step(config.scheduler, self.earlier["metrics"][config.monitor])
        for key, (_, value) in self.override.items():  # check_drift's, resume_override_optimizer=true
            name = key[len(OPTIMIZER):]
            for group in (g for optimizer in trainer.optimizers for g in optimizer.param_groups if name in g):
                group[name] = tuple(value) if isinstance(group[name], tuple) else value


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose restored paths follow a moved or copied run dir: Lightning keeps absolute ones, so a copy
    resumed would test the original's best.ckpt (or none) and write best-v1.ckpt beside its own stale best.ckpt."""

    def load_state_dict(self, state_dict):
        here = lambda path: str(Path(self.dirpath) / Path(path).name) if path else path  # they lie directly in dirpath
        moved = {here(k): v for k, v in state_dict.get("best_k_models", {}).items()}
        super().load_state_dict({k: here(v) if k.endswith("_path") else v for k, v in state_dict.items()} |
                                {"best_k_models": moved, "dirpath": self.dirpath})
