"""What train.py does: validate, then prepare -> build -> fit -> evaluate -> record (results.json)."""

import hashlib
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sarnet import keep_freed_memory, tracking
from sarnet.checkpoint import CheckpointError, load_model, read_checkpoint, resume_path, run_dir_of, stored_run
from sarnet.config import ConfigError, build, validate
from sarnet.data.sources import DataError
from sarnet.io import atomic_write
from sarnet.rundir import RunDirBusy, RunDirError, check_writable, lock_run_dir, relaunch_command, unlock_run_dir
from sarnet.rundir import _rank as process_rank

log = logging.getLogger("sarnet")


class TrainingStopped(RuntimeError):
    """Training stopped itself (a non-finite loss or weights): one line, with the checkpoint that was kept."""


# bad config, checkpoint, data or run dir, faults of the disk and a stopped training: one line, no traceback
USER_ERRORS = (ConfigError, CheckpointError, DataError, RunDirError, OSError, TrainingStopped)


def run_job(cfg: DictConfig) -> float | None:
    """One job. In a multirun a failing job is recorded (results.json status=failed) and the sweep goes on. Bad
    input is refused (exit status 2) before any work, and the run dir is left as this launch found it."""
    try:
        net = validate(cfg)  # bad input first, before the heavy imports, the run dir's lock or any reading
    except Exception as e:
        return failed(cfg, e, 2)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    output_dir = Path(cfg.paths.output_dir)
    found = set(os.listdir(output_dir)) if output_dir.is_dir() else set()  # Hydra's .hydra, an earlier launch's
    lock, progress = None, {}  # run() sets progress["fit"] when training starts: from then on it is not a refusal
    _sigterm.seen, previous = False, signal.signal(signal.SIGTERM, _sigterm)
    try:
        lock = lock_run_dir(output_dir)  # one writer per run dir (rank 0's: None on the others); released below
        return run(cfg, net, progress)
    except SIGTERMException:  # Lightning's at the next batch, or _sigterm's outside fit and test (a SystemExit)
        lock, held = None, lock
        stopped(cfg, held)
    except Exception as e:
        if not isinstance(e, USER_ERRORS) or lock is None or progress.get("fit"):
            return failed(cfg, e, 1)
        keep = found | {".hydra", *["train.log"] * (HydraConfig.get().mode.name == "MULTIRUN")}
        for path in set(output_dir.iterdir()) - {output_dir / k for k in keep}:  # what this refused launch made:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()  # the held lock too
        return failed(cfg, e, 2)
    finally:
        unlock_run_dir(lock)
        signal.signal(signal.SIGTERM, previous)


def _sigterm(signum, frame):
    """SIGTERM while Lightning's own handler is not installed (set-up, FID, writing results) stops the run as it does
    inside fit and test, where it calls this one after its own. Only the first signal counts: a second one (scancel
    signals every process of a step; a sweep passes its own on) must not cut the record short."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    if not _sigterm.seen:
        _sigterm.seen = True
        if signal.getsignal(signal.SIGTERM) is _sigterm:
            raise SIGTERMException


def stopped(cfg: DictConfig, lock):
    """SIGTERM (preemption, scancel, kill): the run is recorded as stopped with the command that resumes it, and the
    process ends with 128 + SIGTERM, in a sweep too: a preempted node must not go on to start the next job."""
    hc, last = HydraConfig.get(), Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
    worker = multiprocessing.parent_process() is not None  # a joblib worker: its sys.argv is not the sweep's
    if hc.mode.name == "MULTIRUN":
        how = f"to resume the sweep: {relaunch_command(sweep_dir=hc.sweep.dir)}" if not worker else \
            f"to resume the sweep, relaunch it with hydra.sweep.dir={hc.sweep.dir}"
    else:
        how = f"to resume: {relaunch_command(run_dir=last.parents[1])}" if last.exists() else \
            f"no checkpoint was written yet; to start again: {relaunch_command()}"
    held = f"{last} holds the last finished epoch" if last.exists() else "no checkpoint yet"
    try:
        failed(cfg, RunDirError(f"stopped by SIGTERM before the run finished ({held}); {how}"), 128 + signal.SIGTERM)
    finally:
        unlock_run_dir(lock)  # after results.json: a joblib sweep's parent waits for every job's release
    if worker:  # SystemExit would end this job only, and the worker would take the next one
        logging.shutdown()
        os.kill(os.getppid(), signal.SIGTERM)  # a worker signalled alone stops the sweep (hydra_callbacks.py)
        multiprocessing.parent_process().join()  # which ends every worker once all have recorded their jobs
        os._exit(128 + signal.SIGTERM)
    sys.exit(128 + signal.SIGTERM)


def failed(cfg: DictConfig, e: Exception, rc: int):
    if HydraConfig.get().mode.name != "MULTIRUN":
        if isinstance(e, USER_ERRORS):  # bad input: its one-line message says which field and the fix
            line = f"{type(e).__module__}.{type(e).__name__}: {e}"
            log.error(line) if rc != 2 else print(line, file=sys.stderr, flush=True)  # a refusal: no train.log
            sys.exit(rc)
        raise e
    log.error("job failed: %s: %s", type(e).__name__, e, exc_info=not isinstance(e, USER_ERRORS))
    if isinstance(e, RunDirBusy):  # the dir is another process's: leave its results.json to it (SweepReport
        return float("nan")        # counts a job dir without results.json as failed)
    write_json(Path(cfg.paths.output_dir) / "results.json",
               {"status": "failed", "error": f"{type(e).__name__}: {e}", "latent_dim": cfg.get("latent_dim"),
                "model": HydraConfig.get().runtime.choices.get("model"), "seed": cfg.get("seed")})
    wandb = sys.modules.get("wandb")  # not imported: no run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1)
    return float("nan")  # a sweeper (Optuna) records a failed trial and goes on


# ---- the run, step by step -----------------------------------------------------------------------------------

def run(cfg: DictConfig, net, progress: dict) -> float | None:
    """Train, test and evaluate `net`, the network validate(cfg) built; progress["fit"]: training has started."""
    start, output_dir = time.time(), Path(cfg.paths.output_dir)
    quiet_console()
    done = finished_before(cfg, output_dir)
    if done is not None:
        log.info("%s finished earlier with this same config: nothing to do (delete its results.json to test and "
                 "score it again)", output_dir)
        return optimized(cfg, done["metrics"])
    code = code_version()  # this launch's code, before anything can change under a long run
    ckpt_path, optimizer_override, earlier = prepare(cfg, net, output_dir)
    trainer, module, datamodule, resume_state = build_run(cfg, net, ckpt_path, optimizer_override, earlier)
    progress["fit"] = True
    # A relaunched finished run trains nothing: its val/train metrics come from the checkpoint it resumed.
    metrics = earlier["metrics"] | fit(cfg, trainer, module, datamodule, ckpt_path)
    evaluated = evaluate(cfg, trainer, module, datamodule, metrics)
    wall_time_s = resume_state.earlier_s + time.time() - start  # every launch of this run, not just this one
    return record(cfg, trainer, datamodule, module.net, evaluated, code, wall_time_s)


def prepare(cfg: DictConfig, net, output_dir: Path) -> tuple[str | None, dict, dict]:
    """The checkpoints this launch reads, checked before any data or model work: the one it resumes (-> its path,
    the optimizer settings to apply to it, what it stored of its run), or init_ckpt's weights, loaded into `net`."""
    from sarnet.resume import check_drift

    ckpt_path = resolve_ckpt(cfg, output_dir)
    if ckpt_path is None:
        init_weights(cfg, net)
        return None, {}, {"config": {}, "metrics": {}}
    ckpt = read_checkpoint(ckpt_path)
    optimizer_override, earlier = check_drift(cfg, ckpt, ckpt_path), stored_run(ckpt)
    # resumed with ckpt_path=, which comes without init_ckpt: the weights it started from are in its checkpoint
    cfg.init_ckpt = cfg.init_ckpt or earlier["config"].get("init_ckpt")
    for path in checkpoint_files(cfg):  # best.ckpt too: test and FID will read it
        if path.exists():
            check_checkpoint(path, "in the run dir being resumed; delete it to start afresh")
    return ckpt_path, optimizer_override, earlier


def build_run(cfg: DictConfig, net, ckpt_path: str | None, optimizer_override: dict, earlier: dict):
    """Everything that can refuse its arguments is built before any data is read or anything is written; then the
    data are read and checked, and the loggers start writing into the run dir. -> trainer, module, data, ResumeState"""
    import lightning as L

    from sarnet.module import count_parameters
    from sarnet.resume import AtomicCheckpointIO, ResumeState, continue_csv

    output_dir, choices = Path(cfg.paths.output_dir), HydraConfig.get().runtime.choices
    module = instantiate(cfg.model, net=net, eval_seed=cfg.seed)  # evaluation noise from the run's seed
    callbacks = [build(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c is not None]
    datamodule = build(cfg.data, "data", DataError)
    if cfg.fid.enabled and process_rank() == 0:  # the FID feature network too (sha256, or trained here on first
        from sarnet.metrics.fid import load_classifier  # use), not after training; rank 0 alone scores FID
        load_classifier(datamodule.dataset, datamodule.root)
    resume_state = ResumeState(cfg, optimizer_override, earlier)
    trainer_cfg, console = trainer_settings(cfg.trainer)
    trainer = build(trainer_cfg, "trainer", logger=False, plugins=[AtomicCheckpointIO()],
                    callbacks=[*callbacks, resume_state, *console])  # it logs the devices it found
    log.info("%s on %s, seed %s -> %s (%s); loading the data", choices.get("model"), choices.get("data"), cfg.seed,
             output_dir, f"resuming {ckpt_path}" if ckpt_path else "new run")
    L.seed_everything(cfg.seed, workers=True)
    keep_freed_memory()  # training allocates weight-sized tensors every step: reuse them (sarnet/__init__.py)
    datamodule.prepare_data()
    datamodule.setup("fit")  # the data's own checks (IDX headers) before the loggers write into the run dir
    params = count_parameters(net)
    log.info("%s: %.3g M parameters, %.3g M of them not masked out", type(net).__name__, params["dense"] / 1e6,
             params["effective"] / 1e6)
    check_writable(output_dir, *{p.parent for p in checkpoint_files(cfg)})
    # the W&B logger is sarnet.tracking's (a name, a group, a resumable id, offline when online cannot work)
    trainer.loggers = [tracking.make_logger(cfg, node, output_dir, net) if name == "wandb" else instantiate(node)
                       for name, node in (cfg.get("logger") or {}).items() if node is not None]
    if ckpt_path:
        continue_csv(trainer.loggers, ckpt_path)
    return trainer, module, datamodule, resume_state


def fit(cfg: DictConfig, trainer, module, datamodule, ckpt_path: str | None) -> dict:
    from sarnet.module import NonFiniteLossError
    from sarnet.resume import NonFiniteWeightsError

    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except (NonFiniteLossError, NonFiniteWeightsError) as e:
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        raise TrainingStopped(f"{e} ({last if last.exists() else 'none was written yet'})") from None
    return scalar_metrics(trainer.callback_metrics)


def evaluate(cfg: DictConfig, trainer, module, datamodule, metrics: dict) -> dict:
    """Test, FID, kNN and likelihood, all of the same weights (evaluated_weights). -> results.json's fields of what
    was evaluated and how, the metrics included."""
    eval_ckpt, eval_epoch = evaluated_weights(cfg, trainer, module)
    if cfg.run_test:  # the VAEs' test noise is per image (module.image_noise): nothing to seed here
        log.info("testing the %s weights", "best" if eval_ckpt else "last")
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=eval_ckpt, verbose=False)
        metrics.update(scalar_metrics(tested[0] if tested else {}))
    fid, scores = None, {}
    if cfg.fid.enabled and trainer.is_global_zero:
        from sarnet.evaluate import evaluate_fid
        fid = evaluate_fid(module.net, datamodule, cfg, say=log.info)
        scores = {"fid/mean": fid["mean"], "fid/std": fid["std"]}
        for th, r in fid["matched"].items():
            scores |= {f"fid@th={th}/mean": r["mean"], f"fid@th={th}/std": r["std"]}
        if fid["knn"]:
            scores["knn/accuracy"] = fid["knn"]["accuracy"]
    if cfg.likelihood.enabled and trainer.is_global_zero:
        from sarnet.likelihood import evaluate_likelihood  # test NLL / bits/dim on the same weights as test
        scores |= evaluate_likelihood(module.net, datamodule, cfg.likelihood)["metrics"]
    metrics.update(scores)
    for lg in trainer.loggers if scores else []:
        lg.log_metrics(scores, step=trainer.global_step)
        lg.save()  # the CSV logger buffers until save(); training is over, nothing else would flush these
    output_dir, callback = Path(cfg.paths.output_dir), trainer.checkpoint_callback
    path = Path(eval_ckpt) if eval_ckpt else output_dir / "checkpoints" / "last.ckpt"
    # what a table cell depends on: the weights evaluated, how images were sampled, how FID was measured.
    # eval_epoch: epochs trained when the evaluated weights were saved, counted as "epochs" is; eval_score: the
    # evaluated checkpoint's own score (metrics["val/loss"] is the last epoch's)
    return {"eval_ckpt": "best" if eval_ckpt else "last", "eval_epoch": eval_epoch, "eval_score": {
        "monitor": callback.monitor, "mode": callback.mode, "value": float(callback.best_model_score)}
        if eval_ckpt and callback.best_model_score is not None else None,
        "checkpoint": os.path.relpath(path, output_dir) if path.exists() else None,
        "sampling": sampling_record(cfg.sample, module.net),
        **{f"fid_{k}": fid[k] if fid else None for k in ("protocol", "values", "matched")},
        "knn": fid["knn"] if fid else None, "metrics": metrics}


def evaluated_weights(cfg: DictConfig, trainer, module) -> tuple[str | None, int]:
    """The checkpoint test and FID evaluate: the best by val/loss with eval_ckpt=best, else None, the weights training
    ended with. -> (it, the epochs trained when they were saved)."""
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    if cfg.eval_ckpt != "best":
        return None, trainer.current_epoch
    if not best:
        log.warning("eval_ckpt=best but no best checkpoint was saved (no val/loss?): evaluating the last weights")
        return None, trainer.current_epoch
    # written during this fit or an earlier one: checked as every other checkpoint is
    ckpt = check_checkpoint(best, "the best checkpoint, which test and FID evaluate; delete it and relaunch with "
                                  "eval_ckpt=last, or re-train")
    if not cfg.run_test:  # else trainer.test loads it
        module.load_state_dict(ckpt["state_dict"])
    return best, ckpt["epoch"] + 1


def record(cfg: DictConfig, trainer, datamodule, net, evaluated: dict, code, wall_time_s: float) -> float | None:
    """results.json (rank 0), the run's W&B summary and files, and the line that ends the run."""
    from sarnet.module import count_parameters

    choices, output_dir = HydraConfig.get().runtime.choices, Path(cfg.paths.output_dir)
    results = {
        **{k: choices.get(k) for k in ("model", "data", "loss")}, "dataset": datamodule.dataset,
        "classes": datamodule.classes, "latent_dim": net.latent_dim or None,
        # patch 0 copied from the input ("given", the reference's) or generated ("predicted"): tables never merge them
        "first_patch": net.ar_net.first_patch if net.ar_net is not None else None, "seed": cfg.seed,
        "init_ckpt": cfg.init_ckpt,  # the weights this run started from (null: a fresh initialisation)
        "epochs": trainer.current_epoch, "steps": trainer.global_step, "params": count_parameters(net),
        "precision": str(trainer.precision),  # as Lightning ran it: 32-true, bf16-mixed, ...
        **evaluated, "config_sha256": config_sha256(cfg), "code": code, "wall_time_s": wall_time_s,
        "device": device_record(trainer),  # wall times of different machines do not compare
        "status": "ok"}
    if trainer.is_global_zero:
        write_json(output_dir / "results.json", results)
        tracking.finish(trainer.loggers, cfg, results, output_dir, checkpoint_files(cfg))
        log.info("done: %s", summary_line(results, output_dir))
    return optimized(cfg, results["metrics"])


# ---- the checkpoints a launch reads --------------------------------------------------------------------------

def resolve_ckpt(cfg: DictConfig, output_dir: Path) -> str | None:
    """The checkpoint this launch resumes: ckpt_path's (whose run dir conf/config.yaml made this launch's run dir),
    else the run dir's own last.ckpt: a relaunch into a run dir resumes it."""
    path = resume_path(cfg.ckpt_path)  # given with init_ckpt, or not there: config.check_fields refused it
    if path is None:
        path = output_dir / "checkpoints" / "last.ckpt"
        if not path.exists():
            return None
        why = "found in the run dir, so train.py resumes from it; delete it to start afresh"
    elif run_dir_of(path) != output_dir.resolve():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} continues the run in {run_dir_of(path)}, not in {output_dir}: "
                          f"drop hydra.run.dir (a sweep resumes with hydra.sweep.dir=<its dir>), or start a new run "
                          f"from its weights with init_ckpt")
    else:
        why = f"given as ckpt_path={cfg.ckpt_path}"
    check_checkpoint(path, why)
    return str(path)


def init_weights(cfg: DictConfig, net):
    """init_ckpt: a new run that starts from another run's weights (fine-tuning, a warm restart of a schedule) with a
    fresh optimizer, lr schedule and epoch count. A resumed run's checkpoint holds what init_ckpt started it from."""
    path = cfg.init_ckpt
    if path is None:
        return
    theirs, ours = check_checkpoint(path, f"given as init_ckpt={path}")["sarnet"]["net"], net.config
    if theirs != ours:  # equal shapes are not enough: the masks follow the geometry
        fields = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in sorted(set(theirs) | set(ours))
                           if theirs.get(k) != ours.get(k))
        raise ConfigError(f"init_ckpt={path} holds another net than model.net builds ({fields}): give that "
                          f"checkpoint's model.net, or drop init_ckpt")
    net.load_state_dict(load_model(path).state_dict(), strict=True)  # the weights only
    log.info("starting from the weights of init_ckpt=%s", path)


def check_checkpoint(path, why: str) -> dict:
    """A damaged checkpoint is one clear error naming the file, never an unpickling traceback or wrong weights."""
    try:
        return read_checkpoint(path)  # also checks the zip's CRC32s
    except CheckpointError as e:
        raise CheckpointError(f"{e} ({why})") from None


def checkpoint_files(cfg) -> list[Path]:
    """The files the checkpoint callbacks write (best.ckpt, last.ckpt), from their dirpath and filename."""
    return [Path(node.dirpath) / f"{node.filename}.ckpt" for node in (cfg.get("callbacks") or {}).values()
            if node is not None and node.get("dirpath") and node.get("filename")]


# ---- what results.json says ----------------------------------------------------------------------------------

def write_json(path: Path, payload: dict):
    atomic_write(path, json.dumps(payload, indent=2, default=float).encode())  # never a half-written results.json


def scalar_metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if not hasattr(v, "numel") or v.numel() == 1}


def config_sha256(cfg: DictConfig) -> str:
    """The resolved config a run was launched with, where it resumed from aside, as one hash: results.json has it."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("ckpt_path", None)
    return hashlib.sha256(json.dumps(resolved, sort_keys=True, default=str).encode()).hexdigest()


def finished_before(cfg: DictConfig, output_dir: Path) -> dict | None:
    """results.json of this run dir if it finished ("ok") with exactly this config: a relaunched sweep then skips
    the job instead of testing and scoring its FID again (minutes per finished job)."""
    try:
        results = json.loads((output_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    ok = results.get("status") == "ok" and results.get("config_sha256") == config_sha256(cfg)
    return results if ok else None


def sampling_record(sample: DictConfig, net) -> dict:
    """The sampling settings the run's images (and FID) depend on (SampleSettings.record)."""
    from sarnet.settings import SampleSettings
    return SampleSettings.of(sample).record(net.out_activation)


def code_version() -> dict | None:
    """The git commit of the code that ran and whether tracked files had uncommitted changes (new, untracked files
    are not counted), None unless the package sits at the top of a git checkout: a seed's initial weights, for one,
    depend on the code's order of random draws, not on the config alone."""
    import subprocess
    root = Path(__file__).resolve().parents[1]
    try:
        head, status = (subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
                        for args in (["rev-parse", "--show-toplevel", "HEAD"], ["status", "--porcelain", "-uno"]))
    except (OSError, subprocess.TimeoutExpired):
        return None
    lines = head.stdout.splitlines()
    if head.returncode or status.returncode or len(lines) != 2 or Path(lines[0]).resolve() != root:
        return None
    return {"commit": lines[1], "dirty": bool(status.stdout.strip())}


def device_record(trainer) -> str:
    """What the run's wall time was spent on: the GPU's name, or the CPU and the threads torch used."""
    import platform

    import torch
    device, threads = trainer.strategy.root_device, torch.get_num_threads()
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"{device.type} {platform.machine()}, {threads} thread{'s' * (threads != 1)}"


def optimized(cfg: DictConfig, metrics: dict) -> float | None:
    """What a sweeper (hparams_search=...) optimizes; nan, a failed trial to it, if this run lacks the metric."""
    return metrics.get(cfg.optimized_metric, float("nan")) if cfg.get("optimized_metric") else None


def summary_line(results: dict, output_dir: Path) -> str:
    """One line to end a run with: every headline metric it computed (losses, test NLL, FID, kNN), the weights they
    are of, time and where everything is."""
    m = results["metrics"]
    parts = [f"{k} {m[k]:.4g}" for k in ("train/loss", "val/loss", "test/loss", "test/mse") if k in m]
    if "test/nll" in m:
        parts.append(f"test/nll {m['test/nll']:.2f} ± {m['test/nll_se']:.2f} nats ({m['test/bpd']:.4f} bits/dim)")
    if "fid/mean" in m:
        parts.append(f"FID {m['fid/mean']:.3f} ± {m['fid/std']:.3f}")
    parts += [f"FID@th={th} {r['mean']:.3f} ± {r['std']:.3f}" for th, r in (results.get("fid_matched") or {}).items()
              if r["mean"] != m.get("fid/mean")]
    if "knn/accuracy" in m:
        parts.append(f"kNN {100 * m['knn/accuracy']:.1f} %")
    parts.append(f"{results['eval_ckpt']} weights (epoch {results['eval_epoch']}), {results['epochs']} epochs in "
                 f"{results['wall_time_s']:.0f} s")
    return ", ".join(parts) + f"; run dir {output_dir}"


# ---- the console: each message once, no advertisements, warnings fixed or filtered with the reason ----------

FILTERED_WARNINGS = [  # warnings that say nothing a sarnet user can or should act on, each with why
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",  # Lightning's own _pytree.py, on a torch API torch deprecates
    # sarnet logs epoch means only (module.py: on_step=False), so the step logging interval never matters
    r"The number of training batches \(\d+\) is smaller than the logging interval",
    r".*does not have many workers",  # the splits are tensors in memory (data/datamodules.py): workers add start-up
    # a resumed run continues its CSV log (resume.continue_csv) and writes into its own checkpoints/ on purpose
    r"(Experiment logs|Checkpoint) directory .* exists and is not empty",
]


def no_tips(record) -> bool:  # Lightning's "💡 Tip: ... try installing litlogger / litmodels"
    return not str(record.msg).startswith("💡 Tip")


def no_epoch_lines(record) -> bool:  # a live progress bar shows them
    return record.name != "sarnet.epochs"


def quiet_console():
    """Lightning and torchmetrics add console handlers of their own, so each of their messages came twice (theirs
    and Hydra's): drop theirs, so that their messages go once, through Hydra's console and train.log. Warnings go
    there too, one line each, less FILTERED_WARNINGS. DDP's ranks above 0 repeat rank 0's messages: they log only
    warnings and errors, except into a log file of their own (Lightning's train_ddp_process_<rank>.log)."""
    for name in ("lightning", "lightning.pytorch", "lightning.fabric", "torchmetrics"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("lightning.pytorch.utilities.rank_zero").addFilter(no_tips)  # idempotent
    for pattern in FILTERED_WARNINGS:
        warnings.filterwarnings("ignore", message=pattern)
    warnings.formatwarning = lambda message, category, filename, lineno, line=None: \
        f"{category.__name__}: {message} ({Path(filename).name}:{lineno})"
    logging.captureWarnings(True)
    for handler in logging.getLogger().handlers if process_rank() != 0 else []:  # under srun every rank shares
        if "_ddp_process_" not in getattr(handler, "baseFilename", ""):            # the job's train.log
            handler.setLevel(logging.WARNING)


def trainer_settings(node: DictConfig) -> tuple[DictConfig, list]:
    """The Trainer's arguments without the nulls (conf/trainer/default.yaml: null = Lightning's default) and the
    console callbacks: a live progress bar on a terminal, else none, and a line per epoch (EpochLine), which goes
    to train.log always and to the console when no bar is live (nohup, SLURM, CI: one line per epoch)."""
    from sarnet.callbacks import EpochLine, ProgressBar

    settings = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items() if v is not None}
    settings["enable_progress_bar"] = live = settings.get("enable_progress_bar", True) and sys.stdout.isatty()
    for handler in logging.getLogger().handlers if live else []:  # Hydra's console handler: not its file's
        if isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler):
            handler.addFilter(no_epoch_lines)  # idempotent
    return OmegaConf.create(settings), [EpochLine(), *([ProgressBar()] if live else [])]
