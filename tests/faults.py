"""Callbacks that inject faults into a real train.py run (`+callbacks.fault._target_=tests.faults.X`)."""

import multiprocessing
import os
import signal
from pathlib import Path

import lightning as L
from hydra.core.hydra_config import HydraConfig


class SigtermAtEpoch(L.Callback):
    """SIGTERM (or `sig`, 2: Ctrl-C) to this process as epoch `epoch` starts, its last checkpoint written."""

    def __init__(self, epoch: int, sig: int = signal.SIGTERM):
        self.epoch, self.sig = epoch, sig

    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == self.epoch:
            os.kill(os.getpid(), self.sig)


class SigtermParentWhenAllTrain(L.Callback):
    """In a joblib worker: once `workers` jobs of the sweep are training (each writes its pid to worker.pid in its
    run dir), SIGTERM to the sweep's parent process, as scancel or a preemption would."""

    def __init__(self, workers: int):
        self.workers, self.sent = workers, False
        self.pid_file = Path(HydraConfig.get().runtime.output_dir) / "worker.pid"

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if multiprocessing.parent_process() is None:  # n_jobs=1 runs in-process: the parent would be the shell
            raise RuntimeError("SigtermParentWhenAllTrain needs a joblib worker (hydra.launcher.n_jobs >= 2)")
        if not self.pid_file.exists():
            self.pid_file.write_text(str(os.getpid()))
        if not self.sent and len(list(self.pid_file.parent.parent.glob(f"*/{self.pid_file.name}"))) >= self.workers:
            self.sent = True
            os.kill(os.getppid(), signal.SIGTERM)


class DamageBest(L.Callback):
    """Flip one byte in the middle of best.ckpt once training is over: the file test and FID would read."""

    def on_fit_end(self, trainer, pl_module):
        path = Path(trainer.checkpoint_callback.best_model_path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
