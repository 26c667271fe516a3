"""A train.py checkpoint read back without Lightning: its "sarnet" entry ({"net": the net's config, "format": 1}),
the module's `state_dict` (keys `net.*`) and what ResumeState keeps of its run ("sarnet_run")."""

import contextlib
import json
from pathlib import Path

from hydra.utils import get_class, instantiate

from sarnet.io import zip_crc_error

LAST = Path("checkpoints", "last.ckpt")  # in a run dir: what a resume continues (conf/callbacks/default.yaml)
HINT = "re-train or pick another checkpoint"  # torch is imported where used: config.py imports this module torch-free


class CheckpointError(RuntimeError):
    pass


def read_checkpoint(path, why="") -> dict:
    """The checkpoint, or one CheckpointError naming the file, what is wrong and (`why`) what it is to this launch."""
    path, damaged = Path(path), f"{path}: cannot be read as a checkpoint (truncated or corrupted?)"
    why = f" ({why})" * bool(why)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file{why}")
    if damage := zip_crc_error(path):
        raise CheckpointError(f"{damaged}: {damage}; {HINT}{why}")
    import torch

    try:  # weights_only: nothing in the file gets to run code
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # a sound zip whose pickle is not (torch's own text would suggest weights_only=False)
        raise CheckpointError(f"{damaged}: {type(e).__name__}; {HINT}{why}") from None
    sarnet = ckpt.get("sarnet") if isinstance(ckpt, dict) else None
    if not isinstance(sarnet, dict) or sarnet.get("format") != 1 or not isinstance(sarnet.get("net"), dict) \
            or "state_dict" not in ckpt:
        raise CheckpointError(f"{path}: not a sarnet checkpoint of format 1 (its 'sarnet' entry is written by "
                              f"train.py's SarnetModule); {HINT}{why}")
    return ckpt


def load_model(path, map_location="cpu"):
    """The plain network (an nn.Module) of a train.py checkpoint, rebuilt from its config, in eval mode."""
    import torch

    ckpt = read_checkpoint(resume_path(path))  # a run dir: its last checkpoint; read on the CPU
    config = ckpt["sarnet"]["net"]
    cls = None  # no such class, or not a class: refused below
    with contextlib.suppress(Exception):  # a network class only (sarnet's, or your own: docs/usage.md), else
        cls = get_class(str(config.get("_target_")))  # instantiate would call whatever the file names
    if not (isinstance(cls, type) and issubclass(cls, torch.nn.Module) and plain_node(config)):
        raise CheckpointError(f"{path}: its net's _target_={config.get('_target_')!r} names no network class (an "
                              f"nn.Module) with plain arguments; {HINT}")
    try:
        net = instantiate(config, _recursive_=False)
    except Exception as e:  # a renamed class or an argument the code no longer takes
        raise CheckpointError(f"{path}: cannot rebuild the net from its stored config {config}: {e}; {HINT}") from e
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
        raise CheckpointError(f"{path}: weights do not fit the net built from {config}: {str(e).strip()}; "
                              f"{HINT}") from e
    return net.to(map_location).eval()


def run_dir_of(path) -> Path:
    """<run>/checkpoints/x.ckpt -> <run>; a checkpoint lying elsewhere -> its own folder."""
    path = Path(path).resolve()
    return path.parent.parent if path.parent.name == "checkpoints" else path.parent


def resume_path(ckpt_path) -> Path | None:
    """A checkpoint as ckpt_path and the commands' --ckpt take it: a run dir means its checkpoints/last.ckpt."""
    path = None if ckpt_path is None else Path(ckpt_path)
    return path / LAST if path is not None and path.is_dir() else path


def stored_run(ckpt: dict) -> dict:
    """A checkpoint's "sarnet_run" (sarnet.resume.ResumeState), its config decoded; "config", "metrics": {} if none."""
    run = ckpt.get("sarnet_run") or {}
    return {"metrics": {}} | run | {"config": json.loads(run.get("config") or "{}")}


def plain_node(config: dict) -> bool:
    """A stored config holding no node for Hydra to build inside it: a `_target_` and plain (list) arguments."""
    plain = lambda v: not isinstance(v, dict) and (not isinstance(v, list) or all(map(plain, v)))  # noqa: E731
    return all(k == "_target_" or not k.startswith("_") and plain(v) for k, v in config.items())


def load_run_config(path) -> dict:
    """What the commands need of a checkpoint's run, from the checkpoint, so that a copy samples and scores as its run
    did; without one: MNIST, all classes, default sampling and FID. -> {run_dir, data: {root, dataset, classes,
    node}, sample, fid}"""
    config = stored_run(read_checkpoint(path))["config"]
    node, dataset = config.get("data") or {}, None
    if node:  # the commands build it (sarnet likelihood): only sarnet's own data modules, with plain arguments
        target = str(node.get("_target_"))
        with contextlib.suppress(Exception):  # a class renamed since
            dataset = get_class(target).dataset if target.startswith("sarnet.data.") and plain_node(node) else None
        if dataset is None:
            raise CheckpointError(f"{path}: its data node {node} is not one of sarnet.data's; {HINT}")
    root = node.get("root", "data")  # stored absolute; elsewhere (another machine) ./data
    return {"run_dir": run_dir_of(path), "sample": config.get("sample") or {}, "fid": config.get("fid"),
            "data": {"root": root if Path(root).exists() else "data", "dataset": dataset or "mnist",
                     "classes": node.get("classes"), "node": node or None}}
