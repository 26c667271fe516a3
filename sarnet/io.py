"""Writing files so that readers see the old file or the whole new one, never half of it; finding damaged ones.

Every file the project writes for others to read (data, manifests, results.json, classifier weights, run files,
checkpoints: sarnet.resume.AtomicCheckpointIO) goes through atomic_write, JSON files through write_json."""

import json
import os
import tempfile
import zipfile
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


def write_json(path, payload):
    atomic_write(path, (json.dumps(payload, indent=2, default=float) + "\n").encode())


def read_json(path) -> dict:
    """A JSON object's content, or {} when the file is missing, unreadable or holds no object (a reader that must say
    why reads it itself)."""
    try:
        value = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}  # a list or number: its callers' .get() would be a traceback


def zip_crc_error(path) -> str | None:
    """torch.save files are zips; torch.load does not check their CRC32s, so a flipped bit would load as a wrong
    weight. Returns a description of the first damaged member (or of an unreadable zip), None if all is well."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{type(e).__name__}: {e}"
    return None if bad is None else f"CRC mismatch in {bad}"
