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


def keep_freed_memory():
    """Let this process reuse the memory it frees instead of handing it back to the OS (glibc's malloc; elsewhere
    nothing happens). By default glibc maps every block above a moving threshold afresh and trims the heap's free
    top, so the weight-sized tensors a training step allocates (W * M, gradients, casts) arrive as fresh pages:
    measured on a 2-core VM, 770 page faults per fp32 SarNET-VAE step and 2,400 per bf16 step, each a trap into the
    kernel; with blocks up to 32 MiB (glibc's largest mmap threshold) taken from a heap that is never trimmed, ~1.
    The process keeps its peak heap: the memory it needed anyway. Called by the commands that run long loops
    (training, FID, the bench), never on import."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):  # not glibc (macOS, musl without mallopt): nothing to tune
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's <malloc.h>
    return bool(mallopt(m_mmap_threshold, 32 << 20)) and bool(mallopt(m_trim_threshold, 1 << 30))


OmegaConf.register_new_resolver("sarnet.reference_th", reference_threshold, replace=True)
OmegaConf.register_new_resolver("sarnet.run_dir", run_dir, replace=True)
