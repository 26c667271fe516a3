"""sarnet: masked-MLP (SemiDense) autoregressive image generation, Hydra + Lightning."""

from importlib.resources import files

from omegaconf import OmegaConf

CONFIG_MODULE = "pkg://sarnet.conf"  # the configs (the repo's top-level conf/), shipped in the package as sarnet.conf


def packaged_config(name: str):
    """One file of the packaged configs, e.g. packaged_config("fid/default"): the defaults a checkpoint without
    its run config falls back on."""
    return OmegaConf.create(files("sarnet.conf").joinpath(f"{name}.yaml").read_text())


def reference_threshold(latent_dim) -> float:
    """The reference's FID sampling threshold: 0.105, tuned down to 0.095 for L=8 (docs/reference.md §4.4)."""
    return 0.095 if int(latent_dim) == 8 else 0.105


def run_dir(ckpt_path, init_ckpt, new: str) -> str:
    """hydra.run.dir (conf/config.yaml): ckpt_path=<run dir, or one of its checkpoints> continues that run in its
    own dir, whatever dir the launch would make; else the new dir `new`. A ckpt_path train.py will refuse (no
    checkpoint there, init_ckpt beside it) gets the new dir too, so that a refused launch never writes into a run."""
    from sarnet.checkpoint import resume_path, run_dir_of

    path = resume_path(ckpt_path)
    return str(run_dir_of(path)) if path is not None and path.is_file() and init_ckpt is None else new


OmegaConf.register_new_resolver("sarnet.reference_th", reference_threshold, replace=True)
OmegaConf.register_new_resolver("sarnet.run_dir", run_dir, replace=True)
