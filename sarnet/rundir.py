"""Run and sweep dirs, torch-free (used before the heavy imports): one writer per run dir and a writable run dir, each
refused in one line before any work; the command that resumes a run or sweep; and the Hydra callbacks
(conf/config.yaml): a writable output dir and every job's fields before Hydra writes, a sweep's report and FID
table, and a SIGTERMed sweep of worker processes that records every running job."""

import contextlib
import fcntl
import logging
import multiprocessing
import os
import re
import shlex
import signal
import sys
import time
from pathlib import Path

from hydra._internal.utils import get_args_parser
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException, OverrideParseException
from hydra.experimental.callback import Callback
from hydra.utils import get_class
from omegaconf import OmegaConf, open_dict

from sarnet.config import check_fields
from sarnet.fields import ConfigError
from sarnet.io import atomic_write, read_json

log = logging.getLogger("sarnet")


class RunDirError(RuntimeError):
    """The run dir cannot be used: another train.py writes into it, or it is not writable."""


class RunDirBusy(RunDirError):
    """Another live train.py holds the run dir's lock."""


def lock_run_dir(run_dir):
    """Take <run>/.lock (flock, our pid inside) or refuse in one line -> the lock. flock, not a pid file: the kernel
    drops it when its owner dies (SIGKILL too), and a recycled pid cannot pass for a live owner."""
    check_writable(run_dir)
    path = Path(run_dir) / ".lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    owner = os.pread(fd, 32, 0).decode(errors="replace").strip()
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise RunDirBusy(f"{path.parent} is in use by another train.py (pid {owner or 'unknown'}, holding {path}): "
                         f"one run dir has one writer: wait for it or stop it, or pick another hydra.run.dir") from None
    if owner:  # unlock_run_dir empties the file: a pid left in it is of an owner that died holding the lock
        log.warning("%s: taking over the lock of pid %s, which does not hold it (it died, or this dir is a copy)", path,
                    owner)
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd


def unlock_run_dir(lock):
    if lock is not None:  # emptied first: running_jobs then sees no owner
        os.ftruncate(lock, 0)
        os.close(lock)


def running_jobs(sweep_dir) -> dict:
    """{lock file: pid} of the sweep's jobs whose live owner holds their run dir now."""
    jobs = {}
    for path in Path(sweep_dir).glob("*/.lock"):
        try:
            jobs[path] = int(path.read_text())
            os.kill(jobs[path], 0)  # alive?
        except (OSError, ValueError):  # gone, released, or not yet written
            jobs.pop(path, None)
    return jobs


def hydra_args(argv: list[str]) -> list[str]:
    """`--key=value` -> the override `key=value`, unless `--key` is one of Hydra's own flags (--config-dir=...)."""
    flags = get_args_parser()._option_string_actions
    return [a[2:] if a.startswith("--") and "=" in a and a.split("=", 1)[0] not in flags else a for a in argv]


def hydra_message(e: Exception, overrides=()) -> str:
    """Hydra's multi-line composition error as one line: the override, what is wrong and the options."""
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


def hydra_value(path) -> str:
    """A path as an override's value that Hydra parses back to it: bare if plain, else in double quotes, with its
    quotes, the backslashes before them and `${` (an interpolation) escaped."""
    text = str(path)
    if re.fullmatch(r"[A-Za-z0-9_./@+-]+", text):
        return text
    escaped = re.sub(r'(\\*)("|$)', lambda m: m[1] * 2 + ("\\" + m[2] if m[2] else ""), text).replace("${", "\\${")
    return f'"{escaped}"'


def relaunch_command(run_dir=None, sweep_dir=None) -> str:
    """This launch's command as typed, continuing its run (ckpt_path=<run dir>; init_ckpt goes: the checkpoint holds
    it) or its sweep (hydra.sweep.dir=<dir>: finished jobs are skipped); neither given: unchanged."""
    def shown(exe, name):  # an interpreter or command inside the working dir (make's .venv/bin/python): its path
        return os.path.relpath(exe) if Path(exe).absolute().is_relative_to(Path.cwd()) else name

    prog, args, python = sys.argv[0], hydra_args(sys.argv[1:]), shown(sys.executable, "python")
    head = [python, "-m", "sarnet"] if prog.endswith("__main__.py") else \
        [python, prog] if prog.endswith(".py") else [shown(prog, Path(prog).name)]
    drop, add = ("hydra.sweep.dir=",), [f"hydra.sweep.dir={hydra_value(sweep_dir)}"]
    if sweep_dir is None:
        drop, add = (("hydra.run.dir=", "ckpt_path=", "init_ckpt="), [f"ckpt_path={hydra_value(run_dir)}"]) if run_dir \
            else ((), [])
    return shlex.join([*head, *(a for a in args if not a.startswith(drop)), *add])


def check_writable(*dirs):
    """A probe written and removed in each dir: a read-only or full disk fails here, not at the first checkpoint."""
    try:
        for d in map(Path, dirs):
            atomic_write(d / f".probe.{os.getpid()}", bytes(4096))  # the dir made too
            (d / f".probe.{os.getpid()}").unlink()
    except OSError as e:  # d: the dir that failed
        raise RunDirError(f"{d}: cannot write ({e.strerror}); free space or pick a writable hydra.run.dir") from None


class SweepReport(Callback):
    """After a multirun: the failed jobs (their results.json says why), the FID table, exit status 1 on a failure."""

    def on_multirun_end(self, config, **kwargs):
        sweep, rows = Path(config.hydra.sweep.dir), []
        for job in sorted(p.parent.parent for p in sweep.glob("*/.hydra/config.yaml")):  # without results.json:
            rows.append((read_json(job / "results.json") or {"status": "failed", "error": "no readable results.json"})
                        | {"dir": job.name})  # killed, refused (another process held the dir) or unreadable
        failed = [r for r in rows if r.get("status") != "ok" or "refused" in r]  # refused: finished with another config
        log.info("sweep %s, jobs: %d ok, %d failed", sweep, len(rows) - len(failed), len(failed))
        for r in failed:
            log.error("  failed: %s: %s", r["dir"], f"{r['refused']} (its earlier results stay)" if "refused" in r
                      else r.get("error"))
        if OmegaConf.select(config, "fid.enabled") and len(rows) > len(failed):
            from sarnet import table

            wandb = OmegaConf.select(config, "logger.wandb") is not None
            try:
                log.info("sweep %s: FID table -> %s", sweep, table.write([sweep], wandb=wandb))
            except table.TableError as e:  # what a rerun would meet too
                log.warning("sweep %s: no FID table: %s", sweep, e)
            except Exception as e:  # noqa: BLE001 -- the jobs are done; the table can be rebuilt from their results
                log.error("FID table failed (%s: %s); rerun: sarnet table %s%s", type(e).__name__, e, sweep,
                          " --wandb" * wandb)
        if failed:
            log.error("to resume or retry them (finished jobs are skipped): %s", relaunch_command(sweep_dir=sweep))
            sys.exit(1)  # the other jobs' results are kept; the sweep as a whole is reported as failed


class StopWorkersOnSigterm(Callback):
    """SIGTERM to a sweep of worker processes (hydra/launcher=joblib) would end the parent alone, its workers training
    on, orphaned: pass it to the workers that hold a job, wait until each has recorded its job as stopped, and end
    with 128 + SIGTERM, starting no other job. A worker signalled itself signals the parent (sarnet/train.py). Ctrl-C
    (SIGINT to every process) the same: else joblib would kill the workers as they record their jobs."""

    def on_multirun_start(self, config, **kwargs):
        if not str(OmegaConf.select(config, "hydra.launcher._target_")).endswith("BasicLauncher"):
            for sig in (signal.SIGTERM, signal.SIGINT):
                signal.signal(sig, lambda signum, frame: _stop_workers(config.hydra.sweep.dir, signum))
            # the killed workers' semaphores are not leaks to report: the resource tracker, started after this, would
            # warn of them in four lines after the one that says the sweep stopped
            filters = [f for f in os.environ.get("PYTHONWARNINGS", "").split(",") if f]
            os.environ["PYTHONWARNINGS"] = ",".join(dict.fromkeys([*filters, "ignore:resource_tracker:UserWarning"]))


def _stop_workers(sweep_dir, signum):
    for sig in (signal.SIGTERM, signal.SIGINT):  # once: scancel signals every process, a stopped worker us too
        signal.signal(sig, signal.SIG_IGN)
    jobs = running_jobs(sweep_dir)  # {run dir lock: worker pid}; an idle worker is left alone (see below)
    log.error("sweep: %s: stopping %d worker process(es); each records its job as stopped; to resume the sweep: %s",
              signal.Signals(signum).name, len(jobs), relaunch_command(sweep_dir=sweep_dir))
    for pid in jobs.values():
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    for _ in range(3000):  # a job stops at its next training batch, or a test or FID set later; 5 min at most
        if not running_jobs(sweep_dir):  # every job has written results.json and released its run dir
            break
        time.sleep(0.1)
    # Only now may any worker end: joblib's executor kills every other worker (SIGKILL) the moment one ends, so a
    # worker that ended early would cut the others' records short. A recorded worker waits for this.
    for worker in multiprocessing.active_children():
        with contextlib.suppress(ProcessLookupError):  # one that ended by itself
            os.kill(worker.pid, signal.SIGKILL)  # loky's processes have no .kill()
        worker.join()
    os._exit(128 + signum)  # not SystemExit: joblib would go on to hand out the remaining jobs


class WritableOutput(Callback):
    """Hydra writes .hydra/ into the run (sweep) dir before train.py runs: a read-only or full disk is refused here,
    in train.py's one-line form, not as Hydra's traceback; and a sweep's bad job before its first job (check_jobs)."""

    made = []  # the run dir this launch made, then its parents it made (a refused launch removes only those)

    def on_run_start(self, config, **kwargs):
        run_dir = Path(os.path.abspath(config.hydra.run.dir))
        WritableOutput.made = [str(d) for d in [run_dir, *run_dir.parents] if not d.exists()]
        self.on_multirun_start(config, folder=config.hydra.run.dir)

    def on_multirun_start(self, config, folder=None, **kwargs):
        folder, key = (config.hydra.sweep.dir, "sweep") if folder is None else (folder, "run")
        empty, chdir = not str(folder).strip(), config.hydra.job.chdir  # Hydra would write into the working dir;
        if empty or chdir:  # a run in its run dir would read data_dir, ckpt_path, init_ckpt from inside it
            print("sarnet.rundir.RunDirError: " + (f"hydra.{key}.dir='{folder}' is empty: give a dir, or drop it for "
                  "Hydra's default" if empty else "hydra.job.chdir=true is invalid: sarnet's paths are relative to "
                  "where train.py is launched; drop it"), file=sys.stderr)
            sys.exit(2)
        if key == "sweep":
            check_jobs(config)
        try:
            check_writable(folder)
        except RunDirError as e:  # on stderr, exit status 1
            sys.exit(f"sarnet.rundir.RunDirError: {str(e).replace('hydra.run.dir', f'hydra.{key}.dir')}")


def check_jobs(config):
    """Each job of a grid sweep (Hydra's basic sweeper, or TableSweeper of hydra_plugins/) passes check_fields before
    the first job runs: a bad field in its last job is refused now, in one line, not after the others trained. An
    Optuna search draws its jobs as it goes."""
    node = OmegaConf.to_container(config.hydra.sweeper, resolve=True)  # as Hydra builds the sweeper from it
    cls = get_class(node.pop("_target_"))
    if "BasicSweeper" not in {c.__name__ for c in cls.__mro__}:  # by name: Hydra's plugin scan loads its modules
        return                                                     # again, as other class objects
    loader, hydra, previous = GlobalHydra.instance().config_loader(), HydraConfig.instance(), HydraConfig.instance().cfg
    task = OmegaConf.to_container(config.hydra.overrides.task, resolve=False)  # as typed: ${...} resolves per job
    params = [f"{k}={v}" for k, v in (node.get("params") or {}).items()]
    try:
        sweeper = cls(**node)  # its own list of jobs: TableSweeper drops duplicates
        sweeper.overrides = sweeper.split_arguments(OverridesParser.create(loader).parse_overrides([*params, *task]),
                                                    None)
        for num, job in enumerate(sweeper.get_job_batch()):
            try:  # Hydra's sweeper would meet a composition error only after writing the sweep dir's multirun.yaml
                cfg = loader.load_sweep_config(config, list(job))
                with open_dict(cfg):
                    cfg.hydra.job.id = cfg.hydra.job.num = num  # as the launcher numbers it (${hydra:job.num})
                hydra.set_config(cfg)
                check_fields(cfg)
            except (ConfigError, HydraException) as e:
                why = e if isinstance(e, ConfigError) else hydra_message(e)
                print(f"sarnet.fields.ConfigError: job {num} ({' '.join(job)}): {why}", file=sys.stderr)
                sys.exit(2)
            except Exception:  # noqa: BLE001 -- its data files and the like: the job checks them where it runs
                continue
    except Exception:  # noqa: BLE001 -- a sweep Hydra cannot expand: its sweeper says why, in one line
        return
    finally:
        hydra.cfg = previous
