"""Load a trained network back from a checkpoint written by train.py: no Lightning, no optimizer, no trainer.

A checkpoint carries `checkpoint["sarnet"] = {"net": <net.config: _target_ and arguments>, "format": 1}` and the
module's `state_dict` (keys prefixed `net.`). The net is rebuilt from its config by today's code (and mask rule), so
the persistent SemiDense masks in the file must equal the rebuilt ones.
"""

import json
import zipfile
from pathlib import Path

from hydra.utils import get_class, instantiate

# torch is imported inside the functions that use it: train.py imports this module (for CheckpointError) before the
# config is validated, and a bad override should be refused without paying for torch's import.

FORMAT = 1
HINT = "re-train or pick another checkpoint"


class CheckpointError(RuntimeError):
    pass


def zip_crc_error(path) -> str | None:
    """torch.save files are zips; torch.load does not check their CRC32s, so a flipped bit would load as a wrong
    weight. Returns a description of the first damaged member (or of an unreadable zip), None if all is well."""
    try:
        with zipfile.ZipFile(path) as z:
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        return f"{type(e).__name__}: {e}"
    return None if bad is None else f"CRC mismatch in {bad}"


def read_checkpoint(path, map_location="cpu") -> dict:
    path, damaged = Path(path), f"{path}: cannot be read as a checkpoint (truncated or corrupted?)"
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if zip_crc_error(path):
        raise CheckpointError(f"{damaged}: {zip_crc_error(path)}; {HINT}")
    import torch

    try:  # weights_only: the file holds tensors and primitives only, so nothing in it gets to run code
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # a sound zip whose pickle is not (torch's own text would suggest weights_only=False)
        raise CheckpointError(f"{damaged}: {type(e).__name__}; {HINT}") from None
    sarnet = ckpt.get("sarnet") if isinstance(ckpt, dict) else None
    if not isinstance(sarnet, dict) or sarnet.get("format") != FORMAT or not isinstance(sarnet.get("net"), dict) \
            or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a sarnet checkpoint of format {FORMAT} (its 'sarnet' entry is written by "
                              f"train.py's SarnetModule); {HINT}")
    return ckpt


def load_model(path, map_location="cpu"):
    """The plain network (SarNet / SarNetVAE / ConvVAE, an nn.Module) of a train.py checkpoint, in eval mode."""
    import torch

    ckpt = read_checkpoint(path, map_location)
    config = ckpt["sarnet"]["net"]
    try:
        net = instantiate(config)
    except Exception as e:  # a renamed class or an argument the code no longer takes
        raise CheckpointError(f"{path}: cannot rebuild the net from its stored config {config}: {e}; "
                              f"{HINT}") from e
    state = {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}
    for key, ours in net.state_dict().items():  # load_state_dict would silently overwrite a mask of the right shape
        theirs = state[key].to(ours) if key.endswith("mask") and key in state else ours
        if theirs.shape == ours.shape and not torch.equal(theirs, ours):
            raise CheckpointError(f"{path}: mask {key} differs from the one the config {config} builds today "
                                  f"({int((theirs != ours).sum())} entries): the mask rule or geometry changed "
                                  f"since training; {HINT}")
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the net built from {config}: "
                              f"{str(e).strip()}; {HINT}") from e
    return net.to(map_location).eval()


def run_dir_of(path) -> Path:
    """<run>/checkpoints/x.ckpt -> <run>; a checkpoint lying elsewhere -> its own folder."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def resume_path(ckpt_path) -> Path | None:
    """A checkpoint as train.py's ckpt_path and the commands' --ckpt take it: a run dir means its last.ckpt."""
    if ckpt_path is None:
        return None
    path = Path(ckpt_path)
    return path / "checkpoints" / "last.ckpt" if path.is_dir() else path


def stored_run(ckpt: dict) -> dict:
    """What train.py keeps of its run in every checkpoint (sarnet.resume.ResumeState), with "config" (the resolved
    config of sarnet.resume.run_config) decoded and "metrics"; both empty in a checkpoint that has none."""
    run = dict(ckpt.get("sarnet_run") or {})
    return run | {"config": json.loads(run.get("config") or "{}"), "metrics": dict(run.get("metrics") or {})}


def load_run_config(path) -> dict:
    """What the commands need of the run that wrote a checkpoint, read from the checkpoint itself, so that a copy
    samples and scores as in its run; a checkpoint that stores none: MNIST, all classes, default sampling and FID.
    -> {"run_dir", "data": {"root", "dataset", "classes", "node"}, "sample": dict, "fid": dict | None}.
    """
    config = stored_run(read_checkpoint(path))["config"]
    node = config.get("data") or {}
    dataset = getattr(get_class(node["_target_"]), "dataset", None) if "_target_" in node else None
    root = node.get("root", "data")  # stored absolute; elsewhere (another machine) ./data
    return {"run_dir": run_dir_of(path), "sample": config.get("sample") or {}, "fid": config.get("fid"),
            "data": {"root": root if Path(root).exists() else "data", "dataset": dataset or "mnist",
                     "classes": node.get("classes"), "node": node or None}}
