"""The checks a run passes before any work; each refusal is one line naming the field and what it takes.

check_fields, torch-free (a second after the command): every field's type and range (FIELDS), every `_target_`,
the files named and the rules between plain fields. validate then builds what a run builds before reading data (the
net, the LightningModule with its loss, optimizer and scheduler, the data module), each constructor checking the rules
that involve it, and checks the few rules between two built objects. The first complaint is the one line.
"""

import importlib.machinery
import importlib.util
import math
import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from sarnet.checkpoint import resume_path  # torch-free
from sarnet.settings import DTYPES, MAX_BATCH, SampleSettings, SettingsError

REAL_SETS = ("test_resampled", "train", "test")  # fid.real_set; here, not in metrics/fid.py, to be checked torch-free
# FID generates n_gen x n_sets x (1 + extra thresholds) images; the thesis' protocol is 10 x 10,000. The fast
# sampler makes ~1,300 images/s on one CPU thread (docs/results/bench.jsonl, case fid): 1e8 images take ~21 h.
FID_IMAGES_CAP, FID_IMAGES_PER_S = 10**8, 1300


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


def check_fields(cfg: DictConfig):
    """The torch-free checks: nodes and their `_target_`s, fields, the rules between plain fields, the files."""
    for key, may_be_null in NODES.items():
        for name, node in _matches(cfg, key):
            _check(node is None and may_be_null or OmegaConf.is_dict(node) and isinstance(node.get("_target_"), str),
                   name, node, "must be a config node with a _target_" + " (or null)" * may_be_null)
            _check(node is None or _defined(node._target_), f"{name}._target_", node and node._target_,
                   "names no class or function that exists: check its spelling")
    geometry = str(OmegaConf.to_container(cfg.model.net).get("geometry"))  # its interpolations, unresolved
    _check("${data.quantize}" not in geometry or cfg.data.get("quantize") is not None, "data.quantize", None,
           "must be 2 or 4: model.net.geometry takes its channels from it (a classification net)")
    for key, (test, allowed) in FIELDS.items():
        for name, value in _matches(cfg, key):
            _check(test(value), name, value, f"must be {allowed}")
    try:
        SampleSettings.of(cfg.sample)
    except SettingsError as e:
        _check(False, f"sample.{e.field}", e.value, e.allowed)
    fid, data = cfg.fid, cfg.data
    images = fid.n_gen * fid.n_sets * (1 + len(fid.get("extra_th") or []))
    _check(images <= FID_IMAGES_CAP, "fid.n_gen", fid.n_gen, f"fid.n_gen x fid.n_sets x (1 + len(fid.extra_th)) "
           f"= {images:.3g} images would take ~{images / FID_IMAGES_PER_S / 3600:.3g} h at {FID_IMAGES_PER_S} "
           f"images/s (the fast sampler on one CPU thread); at most {FID_IMAGES_CAP:.0e} (the thesis: 10 x 10000)")
    _check(fid.knn.n == 0 or fid.knn.n >= 2 * fid.knn.k, "fid.knn.n", fid.knn.n, "must be 0 (off) or >= 2 * k")
    on_test = data.get("val_size") == 0 and OmegaConf.select(cfg, "trainer.limit_val_batches") != 0
    _check(not on_test or cfg.get("eval_ckpt") != "best", "eval_ckpt", "best", "picks the weights with the lowest "
           "val/loss, and data.val_size=0 validates on the test split: use eval_ckpt=last")
    _check(cfg.get("init_ckpt") is None or cfg.get("ckpt_path") is None, "init_ckpt", cfg.get("init_ckpt"),
           f"cannot go with ckpt_path={cfg.get('ckpt_path')}: ckpt_path resumes a run in its own run dir, init_ckpt "
           f"starts a new run from a checkpoint's weights; give one of them")
    for key in ("ckpt_path", "init_ckpt"):  # ckpt_path may name a run dir: its checkpoints/last.ckpt
        path = cfg.get(key)
        _check(path is None or isinstance(path, str) and (resume_path(path) if key == "ckpt_path" else Path(path))
               .is_file(), key, path, "is not a checkpoint file: give an existing .ckpt" +
               ", or a run dir holding checkpoints/last.ckpt" * (key == "ckpt_path"))
    metric = cfg.get("optimized_metric")  # a sweeper must not be handed nan after every trial
    likely = f"{metric}/".startswith(("test/nll", "test/bpd", "test/elbo", "test/iwae", "test/kl/"))  # likelihood's
    computed = {"train": True, "val": OmegaConf.select(cfg, "trainer.limit_val_batches") != 0, "knn": fid.enabled,
                "test": cfg.get("run_test"), "likelihood": OmegaConf.select(cfg, "likelihood.enabled"),
                "fid": fid.enabled}
    _check(metric is None or isinstance(metric, str) and computed.get("likelihood" if likely else metric.split("/")[0]
           .split("@")[0], False), "optimized_metric", metric, "must be null or a metric this run computes: train/...,"
           " val/... (with validation), test/... (run_test; test/nll, test/bpd: likelihood=default), fid/mean (fid "
           "on), knn/accuracy")
    from sarnet.data.sources import FOLDERS, DataError, check_raw  # the data's raw files, unless fetched or not read

    folder = data._target_.rsplit(".", 1)[-1].removesuffix("DataModule")  # MNISTDataModule: torchvision's MNIST
    if folder in FOLDERS.values() and not data.get("download") and data.get("static_dir") is None:
        try:
            check_raw(Path(data.root) / folder / "raw")
        except DataError as e:
            field = "data_dir" if OmegaConf.to_container(data)["root"] == "${data_dir}" else "data.root"
            raise DataError(f"{field}={data.root}: {e}") from None


def validate(cfg: DictConfig):
    """check_fields, then the objects a run builds before reading data, in order -> the net (a config accepted here
    builds); the first complaint is a ConfigError (a DataError for the data module's) of one line."""
    check_fields(cfg)
    import torch

    from sarnet.data.sources import DataError
    from sarnet.likelihood import LikelihoodError, check_density_model

    # train.py trains this net: its initial weights are drawn from cfg.seed's stream (and nothing else's), and the
    # global RNG is left as it was, for seed_everything to set before the data and training draws.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        net = build(cfg.model.net, "model.net", blame="geometry")
    build(cfg.model, "model", net=net)  # SarnetModule: its loss, optimizer and scheduler, against the net
    data = build(cfg.data, "data", DataError)
    if tuple(net.image_shape) != data.image_shape:  # the data's shape or the net's: name both
        q, c = data.quantize, data.image_shape[0]
        raise ConfigError(f"data.quantize={q} and model.net.geometry={_plain(cfg.model.net.get('geometry'))} do not "
                          f"fit: the data are {c} x 28 x 28 images{' (one-hot classes)' * bool(q)}, the net reads "
                          f"{' x '.join(map(str, net.image_shape))}: its geometry must start with [28, {c}, patch]" +
                          "; or use data.quantize=null" * bool(q))
    try:
        SampleSettings.of(cfg.sample).check_fits(net.out_activation)
    except ValueError as e:
        raise ConfigError(f"sample.{e}") from None
    validates = OmegaConf.select(cfg, "trainer.limit_val_batches") != 0
    _check(validates or "ReduceLROnPlateau" not in str(OmegaConf.select(cfg, "model.scheduler._target_")),
           "model.scheduler", OmegaConf.select(cfg, "model.scheduler._target_"), "steps on val/loss, which "
           "trainer.limit_val_batches=0 never computes: use scheduler=none, or validate")
    logged = {f"{stage}/{name}" for stage in ("train", "val") for name in ("loss", "recon", *["kld"] * bool(
        net.latent_dim))} | {"val/mse", "step", "epoch"}  # the last two: Lightning's own counters
    for name, node in (cfg.get("callbacks") or {}).items():  # they would fail after training
        if node is not None and node.get("monitor") is not None:
            _check(node.monitor in logged and (validates or not node.monitor.startswith("val/")),
                   f"callbacks.{name}.monitor", node.monitor, f"must be a metric this model logs: {sorted(logged)} "
                   f"(val/ ones need trainer.limit_val_batches != 0)")
        if node is not None and "keep_patches" in node and net.ar_net is not None:
            _check(node.keep_patches <= net.ar_net.n_patches, f"callbacks.{name}.keep_patches", node.keep_patches,
                   f"must be an int in 0..{net.ar_net.n_patches} (this net's patches)")
    if OmegaConf.select(cfg, "likelihood.enabled"):
        try:
            check_density_model(net)
        except LikelihoodError as e:
            raise ConfigError(f"likelihood.enabled=true: {e}") from None
        _check(data.binarize != "none" or data.static_dir is not None, "data.binarize", "none", "has no Bernoulli "
               "likelihood (grey levels) but likelihood.enabled=true: use data.binarize=dynamic or data.static_dir")
    return net


def build(node: DictConfig, field: str, error: type[Exception] = ConfigError, blame: str | None = None, **kwargs):
    """instantiate(node, **kwargs); the constructor's complaint becomes one line naming the field (its own key, or
    `blame`'s when it names none), not Hydra's multi-line wrapper around it."""
    from hydra.utils import instantiate

    try:
        return instantiate(node, **kwargs)
    except Exception as e:  # noqa: BLE001 -- whatever the constructor raised
        cause, inner = _cause(e), _innermost(e)
        keys = [k for k in node if cause.startswith(f"{k}=")]
        if keys or cause.startswith(("loss.", "model.", "data.")):  # its own key, or a nested node's full name
            message = f"{field}.{cause}" if keys else cause
        elif blame in node and isinstance(inner, ValueError):
            message = f"{field}.{blame}={_plain(node.get(blame))!r} is invalid: {cause}"
        else:
            message = f"{field}: {type(inner).__name__}: {cause}"
        raise error(message) from None if isinstance(inner, (ValueError, TypeError)) else e  # keep the unexpected


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


def _check(ok: bool, field: str, value, allowed: str):
    if not ok:
        raise ConfigError(f"{field}={_plain(value)!r} is invalid: {allowed}")


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _innermost(e: BaseException) -> BaseException:
    while e.__cause__ is not None:
        e = e.__cause__
    return e


def _cause(e: BaseException) -> str:
    """Hydra wraps constructor errors (InstantiationException): the innermost one says what is wrong."""
    text = str(_innermost(e)).strip()
    return text.splitlines()[0] if text else type(_innermost(e)).__name__
