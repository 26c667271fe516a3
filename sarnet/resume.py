"""Resume safety: atomic checkpoint writes that refuse non-finite weights, and CSV logs that continue exactly
where a killed run's last checkpoint left them."""

import csv
import os
from pathlib import Path

import lightning as L
import torch
from lightning.fabric.plugins import TorchCheckpointIO
from lightning.pytorch.loggers import CSVLogger


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
        finally:
            tmp.unlink(missing_ok=True)


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
