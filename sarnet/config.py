"""Fail-fast config checks, run before any data is loaded or any training starts.

Each problem is one line naming the field, the value and what is allowed. The network itself is built here once
(masks for the reference shapes take milliseconds): its constructor is the single source of truth for geometry,
so a config accepted here is a config that builds.
"""

import math

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

SAMPLE_METHODS = ("fast", "naive")
REAL_SETS = ("test_resampled", "train", "test")
EVAL_CKPTS = ("best", "last")
IMAGE_SHAPE = (1, 28, 28)  # (channels, side, side) of every dataset here: MNIST and Fashion-MNIST


class ConfigError(ValueError):
    pass


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _check(ok: bool, field: str, value, allowed: str):
    if not ok:
        raise ConfigError(f"{field}={value!r} is invalid: {allowed}")


def validate(cfg: DictConfig):
    """Raise ConfigError (one clear line) for the first problem found; return the built net otherwise."""
    latent = cfg.get("latent_dim")
    _check(_positive_int(latent), "latent_dim", latent, "must be a positive int, e.g. latent_dim=8,16,32,64,128")
    _check(_seed(cfg.get("seed")), "seed", cfg.get("seed"), "must be an int in [0, 2**32), e.g. seed=1234")
    for flag in ("run_test", "resume_override_optimizer", "fid.enabled", "data.download", "logger.wandb.log_model"):
        value = OmegaConf.select(cfg, flag, default=False)
        _check(isinstance(value, bool), flag, value, "must be true or false")

    eval_ckpt = cfg.get("eval_ckpt", "last")
    _check(eval_ckpt in EVAL_CKPTS, "eval_ckpt", eval_ckpt, f"must be one of {EVAL_CKPTS}")
    _check_optimized_metric(cfg)

    _check_trainer(cfg.get("trainer") or {})

    data = cfg.data
    _check(_positive_int(data.get("batch_size")), "data.batch_size", data.get("batch_size"), "must be a positive int")
    _check(_seed(data.get("split_seed")), "data.split_seed", data.get("split_seed"), "must be an int in [0, 2**32)")
    workers = data.get("num_workers", 0)
    _check(isinstance(workers, int) and not isinstance(workers, bool) and workers >= 0, "data.num_workers", workers,
           "must be an int >= 0 (0 = load in the main process)")
    classes = data.get("classes")
    _check(classes is None or OmegaConf.is_list(classes) and len(classes) > 0 and
           all(isinstance(c, int) and 0 <= c <= 9 for c in classes),
           "data.classes", _plain(classes), "must be null or a non-empty list of labels 0..9, e.g. [5]")
    quantize = data.get("quantize")
    _check(quantize is None or quantize in (2, 4) and not isinstance(quantize, bool), "data.quantize", quantize,
           "must be null (grey levels) or 2 or 4 (classes per pixel, one-hot channels: experiment=cls_sarnet)")
    _check(quantize is None or data.get("binarize", "none") == "none", "data.binarize", data.get("binarize"),
           f"must be none with data.quantize={quantize}: quantising replaces binarizing")
    # before the net is built: a classification net's geometry reads its channels from data.quantize
    out_activation = OmegaConf.select(cfg, "model.net.out_activation", default=None)
    in_channels = OmegaConf.select(cfg, "model.net.geometry.0.1", default=None)
    probability = out_activation == "softmax" and quantize is None and in_channels == 1  # grey in, classes out
    _check((out_activation == "softmax") == (quantize is not None) or probability, "data.quantize", quantize,
           f"must be 2 or 4 for a softmax (classification) net with one-hot input and null for any other "
           f"(model.net.out_activation={out_activation!r}): use experiment=cls_sarnet for the classification SarNET")

    sample = cfg.sample
    _check(sample.method in SAMPLE_METHODS, "sample.method", sample.method, f"must be one of {SAMPLE_METHODS}")
    th = sample.get("th")
    _check(th is None or _number(th) and 0 <= th < 1, "sample.th", th, "must be null or in [0, 1)")
    _check(_number(sample.z_scale) and sample.z_scale > 0, "sample.z_scale", sample.z_scale, "must be > 0")
    _check(_positive_int(sample.get("batch_size")), "sample.batch_size", sample.get("batch_size"),
           "must be a positive int")

    fid = cfg.fid
    # all checked even with fid.enabled=false: a typo is refused now, not when FID is next switched on after training
    _check(_seed(fid.get("seed", 0)), "fid.seed", fid.get("seed"), "must be an int in [0, 2**32)")
    _check(fid.real_set in REAL_SETS, "fid.real_set", fid.real_set, f"must be one of {REAL_SETS}")
    _check(_positive_int(fid.n_gen) and fid.n_gen >= 2, "fid.n_gen", fid.n_gen,
           "must be an int >= 2 (FID needs two samples per side)")
    _check(_positive_int(fid.n_sets), "fid.n_sets", fid.n_sets, "must be a positive int")
    _check(_positive_int(fid.batch_size), "fid.batch_size", fid.batch_size, "must be a positive int")
    extra = fid.get("extra_th")
    _check(extra is None or OmegaConf.is_list(extra) and all(t is None or _number(t) and 0 <= t < 1 for t in extra),
           "fid.extra_th", _plain(extra), "must be a list of thresholds in [0, 1) or null, e.g. [0.105,null]")
    knn = fid.get("knn") or {}
    for key, low in (("n", 0), ("k", 1), ("seed", 0)):
        value = knn.get(key)
        _check(isinstance(value, int) and not isinstance(value, bool) and value >= low, f"fid.knn.{key}", value,
               f"must be an int >= {low}")
    _check(knn.get("n") == 0 or knn.get("n") >= 2 * knn.get("k"), "fid.knn.n", knn.get("n"),
           "must be 0 (off) or at least 2 * fid.knn.k")

    beta = OmegaConf.select(cfg, "model.beta")
    _check(beta is None or _number(beta) and beta >= 0, "model.beta", beta, "must be a finite number >= 0")
    lr = OmegaConf.select(cfg, "model.optimizer.lr")
    _check(_number(lr) and lr > 0, "model.optimizer.lr", lr, "must be a finite number > 0, e.g. 1e-3")
    for key in ("momentum", "weight_decay"):
        value = OmegaConf.select(cfg, f"model.optimizer.{key}", default=None)
        _check(value is None or _number(value) and value >= 0, f"model.optimizer.{key}", value,
               "must be a finite number >= 0")
    ssim_weight = cfg.loss.get("ssim_weight", 0.0)
    _check(_number(ssim_weight) and ssim_weight >= 0, "loss.ssim_weight", ssim_weight,
           "must be a finite number >= 0 (0 = no SSIM term)")

    geometry = OmegaConf.select(cfg, "model.net.geometry")
    _check(geometry is None or OmegaConf.is_list(geometry) and len(geometry) >= 2 and
           all(OmegaConf.is_list(g) for g in geometry),
           "model.net.geometry", _plain(geometry), "must be null or a list of [side, channels, patch], input "
           "first, e.g. [[28,1,4],[14,2,2],[28,2,4],[28,1,4]]")

    # A loss or net that does not build is a config problem, whatever raised it. Hydra wraps the constructor's
    # error: show only its message for the expected kinds (GeometryError is a ValueError), keep the chain else.
    try:
        loss = instantiate(cfg.loss)
    except Exception as e:  # noqa: BLE001 -- the loss' own messages name the field (loss.kind=..., loss.power=...)
        cause = _cause(e)
        raise ConfigError(cause if cause.startswith("loss.") else f"loss={_plain(cfg.loss)} does not build: "
                          f"{type(_innermost(e)).__name__}: {cause}") from _chain(e)
    import torch  # the net's modules need it anyway; Lightning and the rest stay unimported

    try:
        # train.py trains this net: its initial weights are drawn from cfg.seed's stream (and nothing else's), and
        # the global RNG is left as it was, for seed_everything to set before the data and training draws.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.seed)
            net = instantiate(cfg.model.net)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(_net_message(cfg.model.net, e)) from _chain(e)
    shape = tuple(net.image_shape)
    channels = quantize or IMAGE_SHAPE[0]
    _check(shape == (channels, *IMAGE_SHAPE[1:]), "model.net.geometry", _plain(cfg.model.net.get("geometry")),
           f"must start with [28, {channels}, patch]: the data are {channels} x 28 x 28 images (MNIST, "
           f"Fashion-MNIST{f'; data.quantize={quantize} one-hot channels' if quantize else ''})")
    out_activation = net.out_activation
    _check(not probability or net.out_shape[0] == 2, "model.net.geometry", _plain(cfg.model.net.get("geometry")),
           "must end with [28, 2, patch]: a softmax net reading grey images (1 channel) learns the soft targets "
           "(1 - x, x), 2 classes (experiment=cls_sarnet_prob)")
    _check(getattr(loss, "needs_softmax", False) == (out_activation == "softmax"), "loss",
           cfg.loss.get("kind", cfg.loss.get("_target_")), f"does not fit model.net.out_activation={out_activation!r}: "
           f"a softmax (classification) net trains with loss=ce, and only it")
    _check(not loss.needs_sigmoid or out_activation == "sigmoid", "loss", cfg.loss.get("kind"),
           f"bce needs a sigmoid output but model.net.out_activation={out_activation!r}: use loss=mse, l1, "
           f"l1_ssim or mse_ssim, or model.net.out_activation=sigmoid")
    _check_scheduler(cfg)  # after the fields: building it on a stand-in optimizer needs torch
    _check_callbacks(cfg, net)
    from sarnet.likelihood import check_config  # sample.mode/temperature; likelihood needs a density and 0/1 data
    check_config(cfg, net)
    return net


def build(node: DictConfig, field: str, error: type[Exception] = ConfigError, **kwargs):
    """instantiate(node, **kwargs) for train.py's data module, callbacks and trainer, whose constructors check their
    own arguments (DataModule: binarize, val_size; ModelCheckpoint: mode; Lightning's Trainer: accelerator, devices,
    precision): their complaint becomes one line naming the field, not Hydra's multi-line wrapper around it."""
    try:
        return instantiate(node, **kwargs)
    except Exception as e:  # noqa: BLE001 -- whatever the constructor raised, _chain keeps the unexpected kinds
        cause = _cause(e)
        named = any(cause.startswith(f"{key}=") for key in node)
        raise error(f"{field}.{cause}" if named else f"{field}: {cause}") from _chain(e)


# Lightning's precision values (lightning.fabric.connector._PRECISION_INPUT; tests/test_trust.py holds them equal),
# written out so that a bad one is refused before Lightning is imported.
PRECISIONS = ("transformer-engine", "transformer-engine-float16", "16-true", "16-mixed", "bf16-true", "bf16-mixed",
              "32-true", "64-true", "64", "32", "16", "bf16", 64, 32, 16)
PROFILERS = ("simple", "advanced", "pytorch", "xla")  # Lightning's profiler names


def _check_trainer(trainer):
    """The trainer flags conf/trainer/default.yaml declares (null: Lightning's default), checked before any work:
    Lightning itself would refuse most of them only once the data are loaded, and some not at all."""
    def get(key):
        return trainer.get(key)

    epochs = get("max_epochs")
    _check(_positive_int(epochs), "trainer.max_epochs", epochs, "must be a positive int")
    for split in ("train", "val", "test"):
        key = f"limit_{split}_batches"
        low = 0 if split != "train" else 1  # 0 training batches would report status ok after 0 steps
        _check(_limit_ok(get(key), low), f"trainer.{key}", get(key), f"must be null, an int >= {low} (batches) or a "
               f"float in {'[' if low == 0 else '('}0, 1] (a fraction of the epoch)")
    checks = [  # (key, ok, what is allowed); None is Lightning's default for each
        ("check_val_every_n_epoch", _positive_int, "a positive int"),
        ("overfit_batches", lambda v: _limit_ok(v, 0), "an int >= 0 (batches) or a float in [0, 1]"),
        ("val_check_interval", lambda v: _limit_ok(v, 1), "an int >= 1 (batches) or a float in (0, 1]"),
        ("fast_dev_run", lambda v: isinstance(v, int) and v >= 0, "true, false or an int >= 0 (batches)"),
        ("max_steps", lambda v: _int(v) and v >= -1, "an int >= -1 (-1: no limit)"),
        ("num_sanity_val_steps", lambda v: _int(v) and v >= -1, "an int >= -1 (-1: the whole val split)"),
        ("accumulate_grad_batches", _positive_int, "a positive int"),
        ("gradient_clip_val", lambda v: _number(v) and v >= 0, "a number >= 0"),
        ("gradient_clip_algorithm", lambda v: v in ("norm", "value"), "norm or value"),
        ("precision", lambda v: v in PRECISIONS and not isinstance(v, bool), f"one of {PRECISIONS}"),
        ("profiler", lambda v: OmegaConf.is_dict(v) and "_target_" in v or v in PROFILERS,
         f"one of {PROFILERS} or a profiler node with a _target_"),
        ("detect_anomaly", lambda v: isinstance(v, bool), "true or false"),
        ("num_nodes", _positive_int, "a positive int"),
        ("log_every_n_steps", _positive_int, "a positive int"),
    ]
    for key, ok, allowed in checks:
        value = get(key)
        if value is not None and not ok(value):
            _check(False, f"trainer.{key}", _plain(value), f"must be null or {allowed}")


def _int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_scheduler(cfg):
    """model.scheduler (conf/scheduler/): null, or a partial lr scheduler that builds on an optimizer; one stepped
    on val/loss (ReduceLROnPlateau) needs a validation."""
    node = OmegaConf.select(cfg, "model.scheduler", default=None)
    if node is None:
        return
    _check(OmegaConf.is_dict(node) and "_target_" in node and node.get("_partial_") is True, "model.scheduler",
           _plain(node), "must be null or a partial lr scheduler (_target_, _partial_: true), e.g. scheduler=plateau")
    import torch

    try:
        scheduler = instantiate(node)(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1e-3))
    except Exception as e:  # noqa: BLE001 -- the scheduler's own message says what is wrong (factor, patience, ...)
        raise ConfigError(f"model.scheduler={_plain(node)} is invalid: it does not build: "
                          f"{type(_innermost(e)).__name__}: {_cause(e)}") from _chain(e)
    validates = OmegaConf.select(cfg, "trainer.limit_val_batches", default=None) != 0
    _check(validates or not isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau), "model.scheduler",
           node.get("_target_"), "steps on val/loss, which trainer.limit_val_batches=0 never computes: use "
           "scheduler=none, or validate (trainer.limit_val_batches != 0)")


def _check_callbacks(cfg, net):
    """The image grids and the checkpoint monitors, which would otherwise fail after training."""
    latent = bool(net.latent_dim)
    logged = {f"{stage}/{name}" for stage in ("train", "val") for name in ("loss", "recon", *(["kld"] * latent))}
    logged |= {"val/mse", "step", "epoch"}  # the last two: Lightning's own counters, which it lets callbacks monitor
    validates = OmegaConf.select(cfg, "trainer.limit_val_batches", default=None) != 0
    for name, node in (cfg.get("callbacks") or {}).items():
        if node is None:
            continue
        monitor = node.get("monitor")
        if monitor is not None:
            _check(monitor in logged and (validates or not monitor.startswith("val/")), f"callbacks.{name}.monitor",
                   monitor, f"must be one of the metrics this model logs: {sorted(logged)} (val/ ones need "
                            f"trainer.limit_val_batches != 0)")
        if str(node.get("_target_", "")).endswith("ImageGrids"):
            for key in ("every_n_epochs", "n"):
                _check(_positive_int(node.get(key)), f"callbacks.{name}.{key}", node.get(key), "must be a positive int")
            patches = net.ar_net.n_patches if net.ar_net is not None else None
            keep = node.get("keep_patches", 24)
            _check(patches is None or isinstance(keep, int) and not isinstance(keep, bool) and 0 <= keep <= patches,
                   f"callbacks.{name}.keep_patches", keep, f"must be an int in 0..{patches} (this net's patches)")


def _check_optimized_metric(cfg):
    """optimized_metric: a metric this config computes, so that a sweeper is not handed nan after every trial."""
    metric, likelihood = cfg.get("optimized_metric"), OmegaConf.select(cfg, "likelihood.enabled", default=False)
    # sarnet.likelihood.flat_metrics' keys (test/nll, test/bpd, test/kl, ...: not the test step's test/kld)
    likely = f"{metric}/".startswith(("test/nll", "test/bpd", "test/elbo", "test/iwae", "test/kl/"))
    needs = "likelihood" if likely else str(metric).split("/")[0].split("@")[0]
    computed = {"train": True, "val": OmegaConf.select(cfg, "trainer.limit_val_batches", default=None) != 0,
                "test": cfg.get("run_test"), "likelihood": likelihood, "fid": cfg.fid.enabled, "knn": cfg.fid.enabled}
    _check(metric is None or isinstance(metric, str) and computed.get(needs, False), "optimized_metric", metric,
           "must be null or a metric this run computes: train/..., val/... (with validation), test/... (run_test; "
           "test/nll, test/bpd: likelihood=default), fid/mean (fid on), knn/accuracy")


def _limit_ok(limit, low: int) -> bool:
    if limit is None:
        return True
    if isinstance(limit, int) and not isinstance(limit, bool):
        return limit >= low
    return isinstance(limit, float) and (limit > 0 if low else limit >= 0) and limit <= 1


def _seed(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value < 2**32


def _plain(value):
    return OmegaConf.to_container(value, resolve=True) if OmegaConf.is_config(value) else value


def _innermost(e: BaseException) -> BaseException:
    while e.__cause__ is not None:
        e = e.__cause__
    return e


def _chain(e: BaseException) -> BaseException | None:
    return None if isinstance(_innermost(e), (ValueError, TypeError)) else e


def _cause(e: BaseException) -> str:
    """Hydra wraps constructor errors (InstantiationException): the innermost one says what is wrong."""
    text = str(_innermost(e)).strip()
    return text.splitlines()[0] if text else type(_innermost(e)).__name__


def _net_message(node, e: Exception) -> str:
    """Name the model.net field the constructor complained about, with its value."""
    cause, inner = _cause(e), _innermost(e)
    keys = [k for k in node if k != "_target_" and cause.startswith(f"{k}=")]
    if keys:
        field = keys[0]
    elif isinstance(inner, ValueError) and "geometry" in node:  # GeometryError: side / channels / patch
        field = "geometry"
    else:
        return f"model.net={_plain(node)} does not build: {type(inner).__name__}: {cause}"
    return f"model.net.{field}={_plain(node.get(field))!r} is invalid: {cause}"
