"""Load a trained network back from a checkpoint written by train.py: no Lightning, no optimizer, no trainer.

A checkpoint carries `checkpoint["sarnet"] = {"net": <net.config: _target_ and arguments>, "format": 1}` and
the module's `state_dict` (keys prefixed `net.`). The net is rebuilt from its config, so the code that builds
it (and the mask rule) is today's: the persistent SemiDense masks in the file must equal the rebuilt ones.
"""

import json
import warnings
import zipfile
from pathlib import Path

from hydra.utils import get_class, instantiate
from omegaconf import OmegaConf

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
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    damage = zip_crc_error(path)
    if damage:
        raise CheckpointError(f"{path}: cannot be read as a checkpoint (truncated or corrupted?): {damage}; {HINT}")
    import torch

    try:
        with warnings.catch_warnings():  # junk can pass for an old pickle protocol: one error is plenty
            warnings.simplefilter("ignore")
            # weights_only: the file holds tensors and primitives only, so nothing in it gets to run code.
            ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # damaged bytes make the unpickler fail in many ways (EOF, zip, IndexError, ...)
        detail = str(e).strip().splitlines()[0][:160] if str(e).strip() else ""
        if "Weights only load failed" in detail:  # torch's text suggests weights_only=False: not for us
            detail = "not tensors and primitives only"
        raise CheckpointError(f"{path}: cannot be read as a checkpoint (truncated or corrupted?): "
                              f"{type(e).__name__}: {detail}; {HINT}") from e
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("sarnet"), dict) or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a sarnet checkpoint (no 'sarnet' entry, i.e. not written by "
                              f"train.py's SarnetModule); {HINT}")
    fmt = ckpt["sarnet"].get("format")
    if fmt != FORMAT or not isinstance(ckpt["sarnet"].get("net"), dict):
        raise CheckpointError(f"{path}: sarnet checkpoint format {fmt!r} is not supported "
                              f"(expected {FORMAT}); {HINT}")
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
    own = net.state_dict()
    for key, value in own.items():
        # load_state_dict would silently overwrite a mask of the right shape: compare them first.
        if key.endswith("mask") and key in state and state[key].shape == value.shape and \
                not torch.equal(state[key].to(value.device, value.dtype), value):
            diff = int((state[key].to(value.device, value.dtype) != value).sum())
            raise CheckpointError(f"{path}: mask {key} differs from the one the config {config} builds "
                                  f"today ({diff} entries): the mask rule or geometry changed since "
                                  f"training; {HINT}")
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
    """What train.py stores of its run in every checkpoint (sarnet.resume.ResumeState): {"config": the resolved
    config of sarnet.resume.run_config, "metrics": the metrics at the save}."""
    run = ckpt.get("sarnet_run") or {}
    return {"config": json.loads(run.get("config") or "{}"), "metrics": dict(run.get("metrics") or {})}


def load_run_config(path) -> dict:
    """What the commands need of the run that wrote a checkpoint, read from the checkpoint itself (train.py stores
    it there: sarnet.resume.run_config), so that a copy samples and scores as in its run. Checkpoints written before
    they carried it: their run dir's .hydra/config.yaml; neither: MNIST, all classes, default sampling and FID.
    -> {"run_dir", "data": {"root", "dataset", "classes", "node"}, "sample": dict, "fid": dict | None}.
    """
    config = stored_run(read_checkpoint(path))["config"]
    hydra_file = run_dir_of(path) / ".hydra" / "config.yaml"
    if "sample" not in config and hydra_file.is_file():
        cfg = OmegaConf.load(hydra_file)
        config = {k: OmegaConf.to_container(cfg[k], resolve=True) for k in ("data", "sample", "fid") if k in cfg}
    node = config.get("data") or {}
    dataset = getattr(get_class(node["_target_"]), "dataset", None) if "_target_" in node else None
    root = node.get("root", "data")  # stored absolute; elsewhere (another machine) ./data
    return {"run_dir": run_dir_of(path), "sample": config.get("sample") or {}, "fid": config.get("fid"),
            "data": {"root": root if Path(root).exists() else "data", "dataset": dataset or "mnist",
                     "classes": node.get("classes"), "node": node or None}}
