"""Fail-fast config checks: run before any data or model work, one line per problem naming the field."""

from omegaconf import DictConfig


class ConfigError(ValueError):
    pass


def validate(cfg: DictConfig):
    latent = cfg.get("latent_dim")
    if not isinstance(latent, int) or isinstance(latent, bool) or latent <= 0:
        raise ConfigError(f"latent_dim={latent!r} must be a positive int, e.g. latent_dim=8,16,32,64,128")
