"""Every config field's type and range, and every node's `_target_`: checked torch-free, a second after the command,
so that a plain field error is refused before torch loads. The rules between fields live in sarnet.config; the
sampling fields' in sarnet.settings (SampleSettings)."""

import importlib.machinery
import importlib.util
import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sarnet.settings import DTYPES, MAX_BATCH, SampleSettings, SettingsError

REAL_SETS = ("test_resampled", "train", "test")  # fid.real_set; here, not in metrics/fid.py, to be checked torch-free


class ConfigError(ValueError):
    pass


def _int(low, high=None, null=False, why=""):
    return (lambda v: null and v is None or type(v) is int and low <= v <= (high or v),
            ("null or " if null else "") + (f"an int >= {low}" if high is None else f"an int in [{low}, {high}]") + why)


def _num(low, high=math.inf, strict=False, closed=False, null=False):  # strict: > low; closed: <= high
    return (lambda v: null and v is None or type(v) in (int, float) and (low < v if strict else low <= v) and
            (v <= high if closed else v < high), f"{'null or ' if null else ''}a number {'>' if strict else '>='} "
            f"{low}" + (f" and {'<=' if closed else '<'} {high}" if high != math.inf else ""))


def _one_of(*options):
    return lambda v: any(v == o and type(v) is type(o) for o in options), f"one of {options}"


def _limit(low):  # Lightning's limit_*_batches: a count of batches or a fraction of the epoch
    return (lambda v: v is None or type(v) is int and v >= low or type(v) is float and (0 < v if low else 0 <= v) and
            v <= 1, f"null, an int >= {low} (batches) or a float in {'(' if low else '['}0, 1] (of the epoch)")


def _text(null=False):
    return lambda v: null and v is None or isinstance(v, str) and v != "", ("null or " if null else "") + "a string"


# Lightning's precision values (lightning.fabric.connector._PRECISION_INPUT; tests/test_reliability.py holds them
# equal) and profiler names, written out so that a bad one is refused before Lightning is imported.
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)
PROFILERS = ("simple", "advanced", "pytorch", "xla")
FLAG, SEED, TH = _one_of(True, False), _int(0, 2**32 - 1), _num(0, 1, null=True)
BATCH = _int(1, MAX_BATCH, why=" (images per sampler call: ~10 kB of activations each)")
FIELDS = {  # field -> (test, what it takes); absent fields are not checked. callbacks.*: every callback.
    "latent_dim": _int(1), "seed": SEED, "run_test": FLAG, "resume_override_optimizer": FLAG,
    "eval_ckpt": _one_of("best", "last"), "data_dir": _text(), "wandb_project": _text(),
    "trainer.max_epochs": _int(1), "trainer.check_val_every_n_epoch": _int(1, null=True),
    "trainer.limit_train_batches": _limit(1), "trainer.limit_val_batches": _limit(0),
    "trainer.limit_test_batches": _limit(0), "trainer.log_every_n_steps": _int(1, null=True),
    "trainer.enable_progress_bar": FLAG, "trainer.enable_model_summary": FLAG, "trainer.deterministic": FLAG,
    "trainer.use_distributed_sampler": FLAG, "trainer.max_steps": _int(-1, null=True, why=" (-1: no limit)"),
    "trainer.val_check_interval": _limit(1), "trainer.overfit_batches": _limit(0),
    "trainer.num_sanity_val_steps": _int(-1, null=True, why=" (-1: the whole val split)"),
    "trainer.fast_dev_run": (lambda v: v is None or type(v) in (bool, int) and v >= 0, "null, true, false or an int "
                             ">= 0 (batches)"), "trainer.precision": _one_of(None, *PRECISIONS),
    "trainer.accumulate_grad_batches": _int(1, null=True), "trainer.gradient_clip_val": _num(0, null=True),
    "trainer.gradient_clip_algorithm": _one_of(None, "norm", "value"), "trainer.num_nodes": _int(1, null=True),
    "trainer.profiler": (lambda v: v is None or v in PROFILERS or OmegaConf.is_dict(v) and "_target_" in v,
                         f"null, one of {PROFILERS} or a profiler node with a _target_"),
    "trainer.detect_anomaly": _one_of(None, True, False), "logger.wandb.log_model": FLAG,
    "data.root": _text(), "data.batch_size": _int(1), "data.split_seed": SEED, "data.num_workers": _int(0),
    "data.pin_memory": FLAG, "data.download": FLAG, "data.binarize": _one_of("none", "static", "dynamic"),
    "data.quantize": _one_of(None, 2, 4), "data.static_dir": _text(null=True),
    "data.classes": (lambda v: v is None or isinstance(v, list) and 0 < len(v) == len(set(v)) and
                     all(type(c) is int and 0 <= c <= 9 for c in v), "null or a list of distinct labels 0..9"),
    "data.val_size": (lambda v: type(v) is int and v >= 0 or type(v) is float and 0 <= v < 1,
                      "an int count >= 0 or a float fraction in [0, 1) (0: validate on the test split)"),
    "fid.enabled": FLAG, "fid.seed": SEED, "fid.real_set": _one_of(*REAL_SETS), "fid.n_sets": _int(1),
    "fid.n_gen": _int(2, why=" (FID needs two samples per side)"), "fid.batch_size": BATCH,
    "fid.extra_th": (lambda v: v is None or isinstance(v, list) and all(TH[0](t) for t in v),
                     "null or a list of thresholds in [0, 1) or null, e.g. [0.105,null]"),
    "fid.knn.n": _int(0, 20_000, why=" (0: off; its distances grow as n^2)"), "fid.knn.k": _int(1),
    "fid.knn.seed": SEED, "fid.dtype": _one_of(*DTYPES), "likelihood.enabled": FLAG,
    "likelihood.k": _int(1, 100_000, why=" (papers use 5000)"),
    "likelihood.batch_size": BATCH, "likelihood.seed": SEED, "likelihood.progress": FLAG,
    "likelihood.max_images": _int(1, null=True, why=" (null: the whole test split)"),
    "model.beta": _num(0), "model.batch_reduction": _one_of("sum", "mean"), "model.optimizer._partial_":
    _one_of(True), "model.optimizer.lr": _num(0, strict=True), "model.optimizer.momentum": _num(0),
    "model.optimizer.weight_decay": _num(0), "model.optimizer.fused": FLAG, "model.scheduler._partial_": _one_of(True),
    "model.net.latent_dim": _int(0), "model.net.first_patch": _one_of("given", "predicted"),
    "model.net.out_activation": _one_of("none", "sigmoid", "softmax"),
    "model.net.geometry": (lambda v: v is None or isinstance(v, list) and len(v) >= 2 and all(
        isinstance(g, list) and len(g) == 3 and all(type(x) is int and x > 0 for x in g) for g in v),
                           "null or a list of >= 2 [side, channels, patch] positive ints, e.g. [[28,1,4],[28,1,4]]"),
    "loss.kind": _one_of("bce", "power"), "loss.power": _num(0, strict=True),
    "loss.reduction": _one_of("sum", "mean"), "loss.ssim_weight": _num(0),
    "callbacks.*.every_n_epochs": _int(1), "callbacks.*.n": _int(1, 1024, why=" (images in a grid)"),
    "callbacks.*.keep_patches": _int(0), "callbacks.*.save_top_k": _int(-1, why=" (-1: every epoch)"),
    "callbacks.*.mode": _one_of("min", "max"), "callbacks.*.filename": _text(),
    "callbacks.*.monitor": _text(null=True), "callbacks.*.enable_version_counter": FLAG,
    "logger.wandb.offline": _one_of(None, True, False),
}
NODES = {"model": False, "model.net": False, "model.optimizer": False, "loss": False, "data": False,
         "trainer": False, "model.scheduler": True, "callbacks.*": True, "logger.*": True}  # node -> may be null


def check_nodes_and_fields(cfg: DictConfig):
    """Every node is a node with a `_target_` that exists; every field of FIELDS, and of SampleSettings, is of its
    type and range."""
    for key, may_be_null in NODES.items():
        for name, node in _matches(cfg, key):
            check(node is None and may_be_null or OmegaConf.is_dict(node) and isinstance(node.get("_target_"), str),
                  name, node, "must be a config node with a _target_" + " (or null)" * may_be_null)
            check(node is None or _defined(node._target_), f"{name}._target_", node and node._target_,
                  "names no class or function that exists: check its spelling")
    geometry = str(OmegaConf.to_container(cfg.model.net).get("geometry"))  # its interpolations, unresolved
    check("${data.quantize}" not in geometry or cfg.data.get("quantize") is not None, "data.quantize", None,
         "must be 2 or 4: model.net.geometry takes its channels from it (a classification net)")
    for key, (test, allowed) in FIELDS.items():
        for name, value in _matches(cfg, key):
            check(test(value), name, value, f"must be {allowed}")
    try:
        SampleSettings.of(cfg.sample)
    except SettingsError as e:
        check(False, f"sample.{e.field}", e.value, e.allowed)


def _matches(cfg, key):
    """(field name, value: lists plain, nodes as they are) of `key` in cfg; `*` stands for every child of its node."""
    head, star, rest = key.partition(".*")
    for name in [f"{head}.{k}{rest}" for k in OmegaConf.select(cfg, head) or {}] if star else [head]:
        try:
            value = OmegaConf.select(cfg, name, default=KeyError)
        except OmegaConfBaseException as e:  # an interpolation that does not resolve
            raise ConfigError(f"{name}: {str(e).splitlines()[0]}") from None
        if value is not KeyError:
            yield name, OmegaConf.to_container(value, resolve=True) if OmegaConf.is_list(value) else value


def _defined(path: str, depth: int = 0) -> bool:
    """Whether a `_target_` names something its module defines, told without importing the module (torch.optim
    would cost seconds): the module's file must exist and mention the name, itself or in a module it star-imports
    (a lazy module __getattr__ names what it serves too). A compiled module cannot tell: the build decides later."""
    module, _, name = path.rpartition(".")
    try:
        spec = importlib.util.find_spec(module.split(".")[0]) if module else None  # a top-level spec imports nothing
        for part in module.split(".")[1:]:
            spec = spec and spec.submodule_search_locations and importlib.machinery.PathFinder.find_spec(
                part, spec.submodule_search_locations)
    except (ImportError, ValueError):
        return False
    if not spec or not name.isidentifier() or not str(spec.origin).endswith(".py"):
        return bool(spec) and name.isidentifier()
    source = Path(spec.origin).read_text(errors="replace")
    package = (module if spec.submodule_search_locations else module.rpartition(".")[0]).split(".")
    stars = [".".join(package[:len(package) + 1 - len(dots)] + [m]) if dots else m  # `from ..m import *`: absolute
             for dots, m in re.findall(r"^from +(\.*)([\w.]*) +import +\*", source, re.MULTILINE)]
    return bool(re.search(rf"\b{name}\b", source)) or depth < 3 and any(
        _defined(f"{star.strip('.')}.{name}", depth + 1) for star in stars)


def check(ok: bool, field: str, value, allowed: str):
    if not ok:
        raise ConfigError(f"{field}={plain(value)!r} is invalid: {allowed}")


def plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value
