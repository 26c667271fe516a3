"""Fail-fast config checks, run before any data is loaded or any training starts.

Each problem is one line naming the field, the value and what is allowed. The network itself is built here once
(masks for the reference shapes take milliseconds): its constructor is the single source of truth for geometry,
so a config accepted here is a config that builds.
"""

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sarnet.nn.semidense import GeometryError

SAMPLE_METHODS = ("fast", "naive")
REAL_SETS = ("test_resampled", "train", "test")


class ConfigError(ValueError):
    pass


def _positive_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def _check(ok: bool, field: str, value, allowed: str):
    if not ok:
        raise ConfigError(f"{field}={value!r} is invalid: {allowed}")


def validate(cfg: DictConfig):
    """Raise ConfigError (one clear line) for the first problem found; return the built net otherwise."""
    latent = cfg.get("latent_dim")
    _check(_positive_int(latent), "latent_dim", latent, "must be a positive int, e.g. latent_dim=8,16,32,64,128")
    _check(isinstance(cfg.get("seed"), int), "seed", cfg.get("seed"), "must be an int")

    epochs = OmegaConf.select(cfg, "trainer.max_epochs")
    _check(_positive_int(epochs), "trainer.max_epochs", epochs, "must be a positive int")

    data = cfg.data
    _check(_positive_int(data.get("batch_size")), "data.batch_size", data.get("batch_size"), "must be a positive int")
    classes = data.get("classes")
    _check(classes is None or (len(classes) > 0 and all(isinstance(c, int) and 0 <= c <= 9 for c in classes)),
           "data.classes", None if classes is None else list(classes), "must be null or a non-empty list of 0..9")

    sample = cfg.sample
    _check(sample.method in SAMPLE_METHODS, "sample.method", sample.method, f"must be one of {SAMPLE_METHODS}")
    th = sample.get("th")
    _check(th is None or 0 <= th < 1, "sample.th", th, "must be null or in [0, 1)")
    _check(sample.z_scale > 0, "sample.z_scale", sample.z_scale, "must be > 0")

    fid = cfg.fid
    if fid.enabled:
        _check(fid.real_set in REAL_SETS, "fid.real_set", fid.real_set, f"must be one of {REAL_SETS}")
        _check(_positive_int(fid.n_gen) and fid.n_gen >= 2, "fid.n_gen", fid.n_gen,
               "must be an int >= 2 (FID needs two samples per side)")
        _check(_positive_int(fid.n_sets), "fid.n_sets", fid.n_sets, "must be a positive int")
        _check(_positive_int(fid.batch_size), "fid.batch_size", fid.batch_size, "must be a positive int")

    try:
        loss = instantiate(cfg.loss)
        net = instantiate(cfg.model.net)
    except Exception as e:  # Hydra wraps constructor errors; surface the constructor's own message
        cause = e
        while cause.__cause__ is not None:
            cause = cause.__cause__
        if isinstance(cause, (GeometryError, ValueError)):
            raise ConfigError(f"model/loss config: {cause}") from None
        raise
    out_activation = getattr(net, "out_activation", "sigmoid")
    _check(not loss.needs_sigmoid or out_activation == "sigmoid", "loss", cfg.loss.kind,
           f"bce needs a sigmoid output but model.net.out_activation={out_activation!r}: use loss=mse, l1, "
           f"l1_ssim or mse_ssim, or model.net.out_activation=sigmoid")
    return net
