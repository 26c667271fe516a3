"""sarnet: masked-MLP (SemiDense) autoregressive image generation, Hydra + Lightning."""

from omegaconf import OmegaConf


def reference_threshold(latent_dim) -> float:
    """The reference's FID sampling threshold: 0.105, tuned down to 0.095 for L=8 (docs/reference.md §4.4)."""
    return 0.095 if int(latent_dim) == 8 else 0.105


OmegaConf.register_new_resolver("sarnet.reference_th", reference_threshold, replace=True)
