"""Train a model, or a sweep with -m: the Hydra entry (the same overrides as `python train.py`).

    sarnet train model=vae latent_dim=32 trainer.max_epochs=50
    sarnet train -m latent_dim=8,16,32,64,128
    sarnet train --config-dir my_conf experiment=my_experiment     # your own configs beside the packaged ones

`sarnet train --help` lists the config groups and their options (Hydra's help); `--cfg job` prints the composed
config without running it. `--key=value` is taken as the override `key=value`: a W&B sweep agent's default
command passes its parameters that way (docs/wandb_sweep.yaml).
"""

import re
import sys

from sarnet import CONFIG_MODULE, cli
from sarnet.rundir import hydra_args


def task(cfg):
    from sarnet.train import run_job

    return run_job(cfg)


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
        utils._run_hydra(args=args, args_parser=args_parser, task_function=task, config_path=CONFIG_MODULE,
                         config_name="config")
    except ValueError as e:  # two commands at once (-m --cfg job): Hydra's check, outside run_and_report
        if not str(e).startswith("Only one of --run"):
            raise
        print(f"{prog or 'train.py'}: error: {e}; give one", file=sys.stderr, flush=True)
        sys.exit(2)
    finally:
        utils.run_and_report = report


def _composed(func, prog, overrides):
    from hydra.errors import ConfigCompositionException, OverrideParseException, SearchPathException

    try:
        return func()
    except (ConfigCompositionException, OverrideParseException, SearchPathException) as e:  # the last: --config-dir
        print(f"{prog}: error: {hydra_message(e, overrides)}", file=sys.stderr, flush=True)
        sys.exit(2)
    except ValueError as e:  # Optuna's study.best_trial after a search whose every trial failed
        if str(e) != "No trials are completed yet.":
            raise
        print(f"{prog}: error: every trial of the search failed: each job's results.json says why", file=sys.stderr)
        sys.exit(1)


def hydra_message(e: Exception, overrides=()) -> str:
    """Hydra's multi-line composition error as one line: the override, what is wrong and the options."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    text, cause = str(e), e.__cause__
    if isinstance(e, OverrideParseException):
        for override in overrides:  # which one: Hydra's message quotes only the text it stumbled on
            try:
                OverridesParser.create().parse_overrides([override])
            except OverrideParseException:
                return f"{override}: not an override Hydra can parse ({text.splitlines()[0]}); a value holding " \
                       f"'=', ',', brackets, spaces or non-ASCII letters goes in double quotes, e.g. " \
                       f"'init_ckpt=\"multirun/x/0_L=8\"'"
    missing = re.search(r"Could not find '([\w/.-]+)/([^']*)'", text)
    if missing and getattr(e, "options", None):
        return f"{missing[1]}={missing[2]}: no such option of {missing[1]}; choose one of: {', '.join(e.options)}"
    if getattr(cause, "full_key", None) and getattr(cause, "parent_node", None) is not None:
        parent = cause.full_key.rpartition(".")[0] or "the config"
        keys = ", ".join(k for k in cause.parent_node if k != "hydra")
        add = re.search(r"use (\+\S+)", text)  # no keys: an empty node, or one interpolated (`sample: ${sample}`)
        return (f"{cause.full_key}: no such key in {parent} " + (f"(its keys: {keys})" if keys else "(it has none: if "
                "it interpolates another node, such as ${sample}, override the key there)") +
                (f"; a new key needs a +: {add[1]}" if add else ""))
    lines = [line.strip() for line in text.split("Config search path")[0].splitlines()]
    return "; ".join(line for line in lines if line and not line.startswith("See https"))
