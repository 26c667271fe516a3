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
    _check(isinstance(cfg.get("seed"), int), "seed", cfg.get("seed"), "must be an int")

    eval_ckpt = cfg.get("eval_ckpt", "best")
    _check(eval_ckpt in EVAL_CKPTS, "eval_ckpt", eval_ckpt, f"must be one of {EVAL_CKPTS}")

    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    _check(_positive_int(epochs), "trainer.max_epochs", epochs, "must be a positive int")

    data = cfg.data
    _check(_positive_int(data.get("batch_size")), "data.batch_size", data.get("batch_size"), "must be a positive int")
    classes = data.get("classes")
    _check(classes is None or OmegaConf.is_list(classes) and len(classes) > 0 and
           all(isinstance(c, int) and 0 <= c <= 9 for c in classes),
           "data.classes", _plain(classes), "must be null or a non-empty list of labels 0..9, e.g. [5]")

    sample = cfg.sample
    _check(sample.method in SAMPLE_METHODS, "sample.method", sample.method, f"must be one of {SAMPLE_METHODS}")
    th = sample.get("th")
    _check(th is None or _number(th) and 0 <= th < 1, "sample.th", th, "must be null or in [0, 1)")
    _check(_number(sample.z_scale) and sample.z_scale > 0, "sample.z_scale", sample.z_scale, "must be > 0")

    fid = cfg.fid
    if fid.enabled:
        _check(fid.real_set in REAL_SETS, "fid.real_set", fid.real_set, f"must be one of {REAL_SETS}")
        _check(_positive_int(fid.n_gen) and fid.n_gen >= 2, "fid.n_gen", fid.n_gen,
               "must be an int >= 2 (FID needs two samples per side)")
        _check(_positive_int(fid.n_sets), "fid.n_sets", fid.n_sets, "must be a positive int")
        _check(_positive_int(fid.batch_size), "fid.batch_size", fid.batch_size, "must be a positive int")

    beta = OmegaConf.select(cfg, "model.beta")
    _check(beta is None or _number(beta) and beta >= 0, "model.beta", beta, "must be a finite number >= 0")

    geometry = OmegaConf.select(cfg, "model.net.geometry")
    _check(geometry is None or OmegaConf.is_list(geometry) and all(OmegaConf.is_list(g) for g in geometry),
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
    try:
        net = instantiate(cfg.model.net)
    except Exception as e:  # noqa: BLE001
        raise ConfigError(_net_message(cfg.model.net, e)) from _chain(e)
    shape = tuple(getattr(net, "image_shape", None) or net.decoder.image_shape)
    _check(shape == IMAGE_SHAPE, "model.net.geometry", _plain(cfg.model.net.get("geometry")),
           "must start and end with [28, 1, patch]: the data are 1 x 28 x 28 images (MNIST, Fashion-MNIST)")
    out_activation = getattr(net, "out_activation", "sigmoid")
    _check(not loss.needs_sigmoid or out_activation == "sigmoid", "loss", cfg.loss.kind,
           f"bce needs a sigmoid output but model.net.out_activation={out_activation!r}: use loss=mse, l1, "
           f"l1_ssim or mse_ssim, or model.net.out_activation=sigmoid")
    from sarnet.likelihood import check_config  # sample.mode/temperature; likelihood needs a density and 0/1 data
    check_config(cfg, net)
    return net


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
