"""Every config field's type and range, and every node's `_target_`, checked torch-free: a plain field error is
refused before torch loads. The rules between fields live in sarnet.config, the sampling fields' in sarnet.settings."""

import importlib.machinery
import importlib.util
import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sarnet.data.sources import LABELS
from sarnet.settings import DTYPES, MAX_BATCH, MAX_GRID, MAX_K, SampleSettings, SettingsError

REAL_SETS = ("test_resampled", "train", "test")  # fid.real_set; here, not in metrics/fid.py, to be checked torch-free


class ConfigError(ValueError):
    pass


# A field's test and what it takes, in words
_int = lambda low, high=None, null=False, why="": (
    lambda v: null and v is None or type(v) is int and low <= v <= (high or v),
    "null or " * null + (f"an int >= {low}" if high is None else f"an int in [{low}, {high}]") + why)
_num = lambda low, strict=False, null=False, high=math.inf: (  # strict: > low
    lambda v: null and v is None or type(v) in (int, float) and (low < v if strict else low <= v) and v < high,
    f"{'null or ' * null}a number {'>' if strict else '>='} {low}" + f" and < {high}" * (high < math.inf))
_one_of = lambda *options: (lambda v: any(v == o and type(v) is type(o) for o in options), f"one of {options}")
_limit = lambda low: (  # Lightning's limit_*_batches: a count of batches or a fraction of the epoch
    lambda v: v is None or type(v) is int and v >= low or type(v) is float and (0 < v if low else 0 <= v) and v <= 1,
    f"null, an int >= {low} (batches) or a float in {'(' if low else '['}0, 1] (of the epoch)")
_text = lambda null=False: (lambda v: null and v is None or isinstance(v, str) and v > "",
                            "null or " * null + "a string")
_each = lambda names, test: dict.fromkeys(names.split(), test)  # several fields, one test

# Lightning's precision values (lightning.fabric.connector._PRECISION_INPUT; tests/test_bad_inputs.py holds them
# equal) and profiler names, written out so that a bad one is refused before Lightning is imported. The "-true" ones
# cast the net, not the float32 images that the training step, samplers and FID feed it: not taken.
PRECISIONS = ("16-mixed", "bf16-mixed", "32-true", "32", "16", "bf16", 32, 16)
NOT_TAKEN = ("transformer-engine", "transformer-engine-float16", "16-true", "bf16-true", "64-true", "64", 64)
PROFILERS = ("simple", "advanced", "pytorch", "xla")
TH, BATCH = _num(0, null=True, high=1), _int(1, MAX_BATCH, why=" (images per sampler call: ~10 kB of activations each)")
FIELDS = {  # field -> (test, what it takes); absent fields are not checked. callbacks.*: every callback.
    **_each("run_test resume_override_optimizer trainer.enable_progress_bar trainer.enable_model_summary "
            "trainer.deterministic trainer.use_distributed_sampler logger.wandb.log_model data.pin_memory "
            "data.download fid.enabled likelihood.enabled likelihood.progress model.optimizer.fused "
            "model.optimizer.amsgrad model.optimizer.maximize model.optimizer.nesterov model.optimizer.capturable "
            "callbacks.*.enable_version_counter", _one_of(True, False)),
    **_each("trainer.detect_anomaly logger.wandb.offline model.optimizer.foreach", _one_of(None, True, False)),
    **_each("seed data.split_seed fid.seed fid.knn.seed likelihood.seed", _int(0, 2**32 - 1)),
    **_each("latent_dim trainer.max_epochs data.batch_size fid.n_sets fid.knn.k callbacks.*.every_n_epochs", _int(1)),
    **_each("trainer.check_val_every_n_epoch trainer.log_every_n_steps trainer.accumulate_grad_batches "
            "trainer.num_nodes", _int(1, null=True)),
    **_each("data.num_workers model.net.latent_dim callbacks.*.keep_patches", _int(0)),
    **_each("trainer.limit_train_batches trainer.val_check_interval", _limit(1)),
    **_each("trainer.limit_val_batches trainer.limit_test_batches trainer.overfit_batches", _limit(0)),
    **_each("model.beta model.optimizer.momentum model.optimizer.weight_decay loss.ssim_weight", _num(0)),
    **_each("model.optimizer.lr loss.power", _num(0, strict=True)),
    **_each("model.batch_reduction loss.reduction", _one_of("sum", "mean")),
    **_each("model.optimizer._partial_ model.scheduler._partial_", _one_of(True)),
    **_each("data_dir data.root", _text()),
    "wandb_project": (lambda v: isinstance(v, str) and 0 < len(v) <= 128 and not set(v) & set("/\\#?%:"),
                      "a W&B project name: 1 to 128 characters, none of / \\ # ? % :"),
    "callbacks.*.filename": (lambda v: isinstance(v, str) and v.strip(".") > "" and "/" not in re.sub(r"{.*?}", "", v),
                             "a file name (no '/' outside {metric} fields: the file goes into the callback's dirpath)"),
    **_each("data.static_dir callbacks.*.monitor", _text(null=True)),
    **_each("fid.batch_size likelihood.batch_size", BATCH),
    "eval_ckpt": _one_of("best", "last"), "trainer.max_steps": _int(-1, null=True, why=" (-1: no limit)"),
    "trainer.num_sanity_val_steps": _int(-1, null=True, why=" (-1: the whole val split)"),
    "trainer.fast_dev_run": (lambda v: v is None or type(v) in (bool, int) and v >= 0, "null, true, false or an int "
                             ">= 0 (batches)"),
    "trainer.precision": (_one_of(None, *PRECISIONS)[0], f"null or one of {PRECISIONS} (not {NOT_TAKEN}: sarnet's "
                          f"data are float32)"),
    "trainer.gradient_clip_val": _num(0, null=True), "trainer.gradient_clip_algorithm": _one_of(None, "norm", "value"),
    "trainer.profiler": (lambda v: v is None or v in PROFILERS or OmegaConf.is_dict(v) and "_target_" in v,
                         f"null, one of {PROFILERS} or a profiler node with a _target_"),
    "data.binarize": _one_of("none", "static", "dynamic"), "data.quantize": _one_of(None, 2, 4),
    "data.classes": (lambda v: v is None or isinstance(v, list) and 0 < len(v) == len(set(v)) and all(
        type(c) is int and c in LABELS for c in v), f"null or a list of distinct labels {LABELS[0]}..{LABELS[-1]}"),
    "data.val_size": (lambda v: type(v) is int and v >= 0 or type(v) is float and 0 <= v < 1,
                      "an int count >= 0 or a float fraction in [0, 1) (0: validate on the test split)"),
    "fid.real_set": _one_of(*REAL_SETS), "fid.n_gen": _int(2, why=" (FID needs two samples per side)"),
    "fid.extra_th": (lambda v: v is None or isinstance(v, list) and all(TH[0](t) for t in v),
                     "null or a list of thresholds in [0, 1) or null, e.g. [0.105,null]"),
    "fid.knn.n": _int(0, 20_000, why=" (0: off; its distances grow as n^2)"), "fid.dtype": _one_of(*DTYPES),
    "likelihood.k": _int(1, MAX_K, why=" (papers use 5000)"),
    "likelihood.max_images": _int(1, null=True, why=" (null: the whole test split)"),
    "model.net.first_patch": _one_of("given", "predicted"),
    "model.net.out_activation": _one_of("none", "sigmoid", "softmax"),
    "model.net.geometry": (lambda v: v is None or isinstance(v, list) and len(v) >= 2 and all(
        isinstance(g, list) and len(g) == 3 and all(type(x) is int and x > 0 for x in g) for g in v),
                           "null or a list of >= 2 [side, channels, patch] positive ints, e.g. [[28,1,4],[28,1,4]]"),
    "loss.kind": _one_of("bce", "power"), "callbacks.*.n": _int(1, MAX_GRID, why=" (images in a grid)"),
    "callbacks.*.save_top_k": _int(-1, why=" (-1: every epoch)"), "callbacks.*.mode": _one_of("min", "max"),
}
REQUIRED = ("sample fid.enabled fid.n_gen fid.n_sets fid.seed fid.batch_size fid.real_set fid.dtype "
            "fid.knn.n fid.knn.k fid.knn.seed likelihood.enabled likelihood.k likelihood.batch_size likelihood.seed")
NODES = {"model": False, "model.net": False, "model.optimizer": False, "loss": False, "data": False,
         "trainer": False, "model.scheduler": True, "callbacks.*": True, "logger.*": True}  # node -> may be null


def check_nodes_and_fields(cfg: DictConfig):
    """Every node has a `_target_` that exists; every field of FIELDS and of SampleSettings is of its type and range."""
    for key, may_be_null in NODES.items():
        for name, node in _matches(cfg, key) if "*" in key else [(key, OmegaConf.select(cfg, key, default=None))]:
            check(node is None and may_be_null or OmegaConf.is_dict(node) and isinstance(node.get("_target_"), str),
                  name, node, "must be a config node with a _target_" + " (or null)" * may_be_null)
            check(node is None or _defined(node._target_), f"{name}._target_", node and node._target_,
                  "names no class or function that exists: check its spelling")
    for key in REQUIRED.split():  # what the run reads of nodes without a _target_ (a deleted ~fid leaves out some)
        check(OmegaConf.select(cfg, key, default=KeyError) is not KeyError, key, None, "must be given: keep its node")
    known = {k.rpartition(".")[0] for k in FIELDS} | set(FIELDS) | set(REQUIRED.split())
    for node in ("fid", "fid.knn", "likelihood"):  # read by name: a misspelt key added with + is not ignored
        settings = sorted(k.rpartition(".")[2] for k in known if k.rpartition(".")[0] == node)
        for key in sorted(set(OmegaConf.select(cfg, node, default=None) or {}) - set(settings)):
            check(False, f"{node}.{key}", next(_matches(cfg, f"{node}.{key}"))[1],
                  f"not a {node} setting (they are: {', '.join(settings)})")
    geometry = str(OmegaConf.to_container(cfg.model.net).get("geometry"))  # its interpolations, unresolved
    check("${data.quantize}" not in geometry or cfg.data.get("quantize") is not None, "data.quantize", None,
          "must be 2 or 4: model.net.geometry takes channels from it (experiment=cls_sarnet sets it and sample.mode)")
    for key, (test, allowed) in FIELDS.items():
        for name, value in _matches(cfg, key):
            check(test(value), name, value, f"must be {allowed}")
    try:
        SampleSettings.of(cfg.sample)
    except SettingsError as e:
        check(False, f"sample.{e.field}", e.value, e.allowed)


def _matches(cfg, key):
    """(name, value: lists plain) of each field `key` names in cfg; `*` stands for every child of its node."""
    head, star, rest = key.partition(".*")
    for name in [f"{head}.{k}{rest}" for k in OmegaConf.select(cfg, head) or {}] if star else [head]:
        try:
            value = OmegaConf.select(cfg, name, default=KeyError)
        except OmegaConfBaseException as e:  # an interpolation that does not resolve
            raise ConfigError(f"{name}: {str(e).splitlines()[0]}") from None
        if value is not KeyError:
            yield name, OmegaConf.to_container(value, resolve=True) if OmegaConf.is_list(value) else value


def _defined(path: str, depth: int = 0) -> bool:
    """Whether a `_target_`'s module defines its name, told without importing it (torch.optim costs seconds): the
    module's source names it, or a module it star-imports does; a compiled module cannot tell (the build decides)."""
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
