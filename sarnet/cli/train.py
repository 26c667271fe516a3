"""Train a model, or a sweep with -m: the Hydra entry (the same overrides as `python train.py`).

    sarnet train model=vae latent_dim=32 trainer.max_epochs=50
    sarnet train -m latent_dim=8,16,32,64,128
    sarnet train --config-dir my_conf experiment=my_experiment     # your own configs beside the packaged ones

`sarnet train --help` lists the config groups and their options (Hydra's help); `--cfg job` prints the composed
config without running it. `--key=value` is taken as the override `key=value`: a W&B sweep agent's default
command passes its parameters that way (docs/wandb_sweep.yaml).
"""

import sys

from sarnet import CONFIG_MODULE, cli
from sarnet.rundir import hydra_args, hydra_message
from sarnet.train import run_job


def main(argv=None, prog=None):
    """Hydra's own main on `argv` (default: sys.argv[1:]). sys.argv stays as the user typed it, so the ranks that
    Lightning's DDP relaunches from it (python train.py ..., sarnet train ..., python -m sarnet train ...) run the
    same command. An override Hydra cannot compose is one line naming it (and the options), exit status 2."""
    from hydra import version
    from hydra._internal import utils

    version.setbase("1.3")
    args_parser = utils.get_args_parser()
    args_parser.error = lambda message: cli.fail(prog or "train.py", message + " (Hydra's flags, such as -m, go "
                                                 "before the overrides)" * message.startswith("unrecognized"))
    args = args_parser.parse_args(hydra_args(sys.argv[1:] if argv is None else argv))
    report = utils.run_and_report  # Hydra prints its errors through this: its composition errors, one line here
    utils.run_and_report = lambda func: report(lambda: _composed(func, prog or "train.py", args.overrides))
    try:
        utils._run_hydra(args=args, args_parser=args_parser, task_function=run_job, config_path=CONFIG_MODULE,
                         config_name="config")
    except ValueError as e:  # two commands at once (-m --cfg job): Hydra's check, outside run_and_report
        if not str(e).startswith("Only one of --run"):
            raise
        cli.fail(prog or "train.py", f"{e}; give one")
    finally:
        utils.run_and_report = report


def _composed(func, prog, overrides):
    from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException

    try:
        return func()
    except (ConfigCompositionException, OverrideParseException, SearchPathException) as e:  # the last: --config-dir
        cli.fail(prog, hydra_message(e, overrides))
    except ValueError as e:  # Optuna's study.best_trial after a search whose every trial failed
        if str(e) != "No trials are completed yet.":
            raise
        print(f"{prog}: error: every trial of the search failed: each job's results.json says why", file=sys.stderr)
        sys.exit(1)
