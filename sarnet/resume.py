"""Resume safety: atomic checkpoint writes that refuse non-finite weights, and CSV logs that continue exactly
where a killed run's last checkpoint left them."""

import csv
import json
import logging
import os
import random
import time
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger
from omegaconf import OmegaConf

from sarnet.checkpoint import stored_run
from sarnet.config import ConfigError
from sarnet.rundir import RunDirError

log = logging.getLogger("sarnet")


class NonFiniteWeightsError(RuntimeError):
    pass


class AtomicCheckpointIO(TorchCheckpointIO):
    """Checkpoints written as a temp file beside the target, fsynced, then renamed over it.

    Lightning writes to a temp file in $TMPDIR and shutil.move()s it: a plain copy, so not atomic, when $TMPDIR
    is another filesystem (usual on clusters), and a SIGKILL mid-copy leaves a truncated last.ckpt. It would also
    overwrite the last good checkpoint with NaN weights; this refuses to.
    """

    def save_checkpoint(self, checkpoint, path, storage_options=None):
        bad = [k for k, v in checkpoint.get("state_dict", {}).items()
               if v.is_floating_point() and not torch.isfinite(v).all()]
        if bad:
            raise NonFiniteWeightsError(f"non-finite weights at epoch {checkpoint.get('epoch')}, step "
                                        f"{checkpoint.get('global_step')} ({', '.join(bad[:3])}): not writing "
                                        f"{path}, the last good checkpoint is kept; lower the learning rate")
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        for stale in path.parent.glob(f".{path.name}.*.part"):  # left by a run killed mid-write
            stale.unlink(missing_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.part")
        try:
            with open(tmp, "wb") as f:
                torch.save(checkpoint, f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        except (OSError, RuntimeError) as e:
            # torch.save reports a full disk as a RuntimeError from its zip writer ("file write failed"), the
            # OSError only chained: name the cause and the file in one line; the old checkpoint is untouched.
            raise RunDirError(f"{path}: cannot write the checkpoint ({write_failure(e, path.parent)}); the last "
                              f"good checkpoint is kept: free space or pick a writable hydra.run.dir") from None
        finally:
            tmp.unlink(missing_ok=True)


def write_failure(e: BaseException, folder) -> str:
    """The OS-level reason of a failed write: the chained OSError's text, or a full disk found by statvfs."""
    while e is not None:
        if isinstance(e, OSError) and e.strerror:
            return e.strerror
        e = e.__cause__ or e.__context__
    try:
        if os.statvfs(folder).f_bavail == 0:
            return "No space left on device"
    except OSError:
        pass
    return "write failed"


class FlushLogs(L.Callback):
    """Make a checkpoint cover the log rows of its epoch, so that a run killed at any moment resumes with
    every epoch logged once (see continue_csv).

    The CSV logger buffers rows for 100 steps: flush them when a checkpoint is written. And Lightning logs an
    epoch's train metrics only after its end-of-epoch checkpoint: keep that row in the checkpoint itself.
    """

    epoch_ended = None

    def on_train_epoch_start(self, trainer, pl_module):
        self.epoch_ended = None
        for lg in trainer.loggers:
            lg.save()

    def on_train_epoch_end(self, trainer, pl_module):  # runs before ModelCheckpoint's (Lightning orders them)
        self.epoch_ended = trainer.current_epoch

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        for lg in trainer.loggers:
            lg.save()
        if self.epoch_ended == trainer.current_epoch:  # callback_metrics now hold this epoch's train values
            train = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("train/")}
            checkpoint["sarnet_train_row"] = {**train, "epoch": trainer.current_epoch,
                                              "step": trainer.global_step - 1}  # Lightning's epoch-end step


def continue_csv(loggers, ckpt_path: str):
    """CSVLogger deletes an existing metrics.csv: on resume, put back the rows up to the checkpoint's epoch.

    Rows of later epochs came from the epoch being redone after the kill, so dropping them logs every epoch once.
    A train row killed before it reached the file comes from the checkpoint (FlushLogs).
    """
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=True, mmap=True)
    epoch, pending = ckpt.get("epoch"), ckpt.get("sarnet_train_row")
    for lg in loggers if epoch is not None else []:
        path = Path(lg.log_dir) / "metrics.csv" if isinstance(lg, CSVLogger) else None
        if path is None or not path.is_file():
            continue
        with open(path, newline="") as f:
            rows = [r for r in csv.DictReader(f) if r.get("epoch") and int(float(r["epoch"])) <= epoch]
        if pending and not any(int(float(r["epoch"])) == epoch and r.get(k) for r in rows for k in pending
                               if k.startswith("train/")):
            rows.append(dict(pending))
        lg.experiment  # noqa: B018 -- creating the writer is what deletes the old file
        for r in rows:
            step = int(float(r.pop("step")))
            lg.log_metrics({k: v for k, v in r.items() if v != ""}, step=step)
        lg.save()


# ---- resume: the config it was trained with, its RNG streams, its best.ckpt ------------------------------

# What a resumed run may not change: the model, the loss, the data and the trainer settings that shape each
# step. Where the data lie, how they are loaded and how long to train may change (max_epochs extends a run).
DRIFT_KEYS = ("latent_dim", "seed", "model", "loss", "data", "trainer.limit_train_batches",
              "trainer.accumulate_grad_batches", "trainer.gradient_clip_val", "trainer.precision")
FREE_KEYS = ("data.root", "data.num_workers", "data.pin_memory", "data.download",
             "model.loss")  # model.loss is ${loss}: checked once, as `loss`
# What else every checkpoint carries of its run's config: how it samples and how its FID is measured (with the data
# above: the commands score a checkpoint copied anywhere as in its run, sarnet.checkpoint.load_run_config), and the
# weights the run started from (a run resumed with ckpt_path= reports its init_ckpt still).
CARRIED_KEYS = ("sample", "fid", "init_ckpt")
OPTIMIZER = "model.optimizer"


def run_config(cfg) -> dict:
    """The resolved config a checkpoint carries: DRIFT_KEYS and CARRIED_KEYS, the data root made absolute."""
    out = {}
    for key in DRIFT_KEYS + CARRIED_KEYS:
        value = OmegaConf.select(cfg, key, default=None)
        out[key] = OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
    if (out["data"] or {}).get("root"):
        out["data"]["root"] = os.path.abspath(out["data"]["root"])
    return out


def _flatten(value, prefix=""):
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            out.update(_flatten(v, f"{prefix}.{k}" if prefix else str(k)))
        return out
    return {prefix: value}


def check_drift(cfg, ckpt: dict, ckpt_path) -> dict:
    """Refuse a resume whose config trains something else than the checkpoint did, in one line naming the fields.

    Optimizer settings may change only with resume_override_optimizer=true (returned, then applied to the
    restored optimizer by ResumeState; its class cannot change, its state would not fit).
    -> {field: (old, new)} of the optimizer settings to apply.
    """
    old, new = _flatten(stored_run(ckpt)["config"]), _flatten(run_config(cfg))
    diff = {k: (old.get(k), new.get(k)) for k in sorted(set(old) | set(new))
            if old.get(k) != new.get(k) and k.startswith(DRIFT_KEYS) and not k.startswith(FREE_KEYS)}
    optimizer = {k: v for k, v in diff.items() if k.startswith(OPTIMIZER + ".")}
    drift = {k: v for k, v in diff.items() if k not in optimizer}
    override = bool(cfg.get("resume_override_optimizer", False))
    if f"{OPTIMIZER}._target_" in optimizer or optimizer and not override:
        drift.update(optimizer)
    if drift:
        fields = ", ".join(f"{k}: {a!r} -> {b!r}" for k, (a, b) in drift.items())
        hint = ("; optimizer settings may change with resume_override_optimizer=true" if optimizer and
                f"{OPTIMIZER}._target_" not in optimizer else "")
        raise ConfigError(f"resume refused: the config differs from the one {ckpt_path} was trained with "
                          f"({fields}); revert it, or start a new run in a new dir (init_ckpt={ckpt_path} "
                          f"starts one from its weights){hint}")
    for k, (a, b) in optimizer.items():
        log.warning("resume_override_optimizer=true: %s %r -> %r, applied to the restored optimizer", k, a, b)
    return optimizer


def _rng_state() -> dict:
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    return {"torch": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            # plain ints and tensors: checkpoints are read with weights_only=True
            "numpy": [kind, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(gauss)],
            "python": random.getstate()}


def _set_rng_state(state: dict):
    torch.set_rng_state(state["torch"])
    if state.get("cuda") and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    kind, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(state["python"])


class ResumeState(L.Callback):
    """What a resumed run needs to go on exactly as if never stopped, stored in every checkpoint:

    - the RNG streams (torch, CUDA, numpy, python) at the moment of the save, put back when training restarts,
      after seed_everything and the sanity check, so that the VAE's noise and dynamic binarisation continue
      where they were (the data order has its own generator, in the DataModule's state);
    - the drift-relevant config (check_drift compares a relaunch against it);
    - the metrics at the save, so that relaunching a finished run reports them again instead of none;
    - the seconds spent in earlier launches up to the save (`earlier_s` after a resume), so that a run's
      wall time counts every launch, not only the last;
    - the ReduceLROnPlateau step of the checkpoint's epoch (scheduler=plateau): Lightning takes it after the
      epoch's checkpoint is written and, resuming, skips it (it keeps no metrics), so a resumed run would drop
      its lr one epoch late; it is taken here, on the monitored value the checkpoint stored.
    """

    def __init__(self, cfg=None, optimizer_override: dict | None = None):
        self.config = json.dumps(run_config(cfg)) if cfg is not None else None
        self.optimizer_override = optimizer_override or {}
        self.restored, self.restored_metrics = None, None
        self.started, self.earlier_s = time.time(), 0.0
        self.trained = False  # set when fit ends: testing a checkpoint restores callbacks too, and must not
        # replace earlier_s with that checkpoint's wall time (which counts this launch already)

    def state_dict(self):
        return {"rng": _rng_state(), "wall_time_s": self.earlier_s + time.time() - self.started}

    def load_state_dict(self, state_dict):
        if self.trained:  # trainer.test(ckpt_path=...) after fit: nothing of a resume to restore
            return
        self.restored = state_dict.get("rng")
        self.earlier_s = state_dict.get("wall_time_s", 0.0)  # checkpoints written before it was recorded: 0

    def on_load_checkpoint(self, trainer, pl_module, checkpoint):
        if not self.trained:
            self.restored_metrics = (checkpoint.get("sarnet_run") or {}).get("metrics")

    def on_train_end(self, trainer, pl_module):
        self.trained = True

    def on_save_checkpoint(self, trainer, pl_module, checkpoint):
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.is_tensor(v) and v.numel() == 1}
        metrics.update({k: v for k, v in (checkpoint.get("sarnet_train_row") or {}).items()
                        if k.startswith("train/")})
        checkpoint["sarnet_run"] = {"config": self.config, "metrics": metrics}

    def on_train_start(self, trainer, pl_module):
        if self.restored is not None:
            _set_rng_state(self.restored)
            self.restored = None
        for config in trainer.lr_scheduler_configs if self.restored_metrics is not None else []:
            # last_epoch counts the steps taken: one per finished epoch, unless the last one's was skipped
            if config.reduce_on_plateau and config.scheduler.last_epoch < trainer.current_epoch:
                pl_module.lr_scheduler_step(config.scheduler, self.restored_metrics[config.monitor])
        self.restored_metrics = None
        for key, (_, value) in self.optimizer_override.items():
            name = key[len(OPTIMIZER) + 1:]
            for optimizer in trainer.optimizers:
                for group in optimizer.param_groups:
                    if name in group:
                        group[name] = tuple(value) if isinstance(group[name], tuple) else value


class RunCheckpoint(ModelCheckpoint):
    """ModelCheckpoint whose saved paths follow the run dir when it is moved or copied.

    Lightning stores absolute paths (best_model_path, best_k_models): resumed from a copy, the copy would test
    the original's best.ckpt (or fail if it is gone) and write best-v1.ckpt beside its own stale best.ckpt.
    The checkpoints lie directly in dirpath: each stored path is taken as the same name in today's dirpath.
    """

    @property
    def state_key(self) -> str:  # the same key as a plain ModelCheckpoint: checkpoints stay interchangeable
        return super().state_key.replace(type(self).__qualname__, "ModelCheckpoint", 1)

    def load_state_dict(self, state_dict):
        def here(path):
            return str(Path(self.dirpath) / Path(path).name) if path else path
        paths = {k: here(state_dict[k]) for k in ("best_model_path", "kth_best_model_path", "last_model_path")
                 if k in state_dict}
        best_k = {here(k): v for k, v in state_dict.get("best_k_models", {}).items()}
        super().load_state_dict({**state_dict, **paths, "best_k_models": best_k, "dirpath": self.dirpath})
