"""Writing files so that readers see the old file or the whole new one, never half of it.

Every file the project writes for others to read (data, manifests, results.json, classifier weights, run files)
goes through atomic_write; checkpoints stream through the same temp-file-and-rename in
sarnet.resume.AtomicCheckpointIO."""

import os
import tempfile
from pathlib import Path


def atomic_write(path, data: bytes):
    """Write to a temp file in the same folder, then rename: readers see the old file or the whole new one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".part")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600; data files should be readable like any other
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
