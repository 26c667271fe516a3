"""Train a model, or a sweep with -m: the Hydra entry (the same overrides as `python train.py`).

    sarnet train model=vae latent_dim=32 trainer.max_epochs=50
    sarnet train -m latent_dim=8,16,32,64,128
    sarnet train --config-dir my_conf experiment=my_experiment     # your own configs beside the packaged ones

`sarnet train --help` lists the config groups and their options (Hydra's help); `--cfg job` prints the composed
config without running it. `--key=value` is taken as the override `key=value`: a W&B sweep agent's default
command passes its parameters that way (docs/wandb_sweep.yaml).
"""

import sys

from sarnet import CONFIG_MODULE


def task(cfg):
    from sarnet.train import run_job

    return run_job(cfg)


def main(argv=None, prog=None):
    """Hydra's own main on `argv` (default: sys.argv[1:]). sys.argv stays as the user typed it, so the ranks that
    Lightning's DDP relaunches from it (python train.py ..., sarnet train ..., python -m sarnet train ...) run the
    same command."""
    from hydra import version
    from hydra._internal.utils import _run_hydra, get_args_parser

    version.setbase("1.3")
    args_parser = get_args_parser()
    args = args_parser.parse_args(hydra_args(sys.argv[1:] if argv is None else argv))
    _run_hydra(args=args, args_parser=args_parser, task_function=task, config_path=CONFIG_MODULE,
               config_name="config")


def hydra_args(argv: list[str]) -> list[str]:
    """`--key=value` -> the override `key=value`, unless `--key` is one of Hydra's own flags (--config-dir=...)."""
    from hydra._internal.utils import get_args_parser

    flags = get_args_parser()._option_string_actions
    return [a[2:] if a.startswith("--") and "=" in a and a.split("=", 1)[0] not in flags else a for a in argv]
