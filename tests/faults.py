"""Callbacks that inject faults into a real train.py run (`+callbacks.fault._target_=tests.faults.X`): used by
tests/test_trust.py and scripts/torture.py."""

import os
import signal
from pathlib import Path

import lightning as L


class SigtermAtStart(L.Callback):
    """SIGTERM to this process at the first training batch, as a scheduler's preemption would."""

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        if trainer.global_step == 0:
            os.kill(os.getpid(), signal.SIGTERM)


class DamageBest(L.Callback):
    """Flip one byte in the middle of best.ckpt once training is over: the file test and FID would read."""

    def on_fit_end(self, trainer, pl_module):
        path = Path(trainer.checkpoint_callback.best_model_path)
        data = bytearray(path.read_bytes())
        data[len(data) // 2] ^= 0xFF
        path.write_bytes(bytes(data))
