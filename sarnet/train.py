"""What train.py does: validate, then prepare -> build -> fit -> evaluate -> record (results.json)."""

import contextlib
import hashlib
import json
import logging
import math
import multiprocessing
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sarnet import keep_freed_memory, rundir, tracking
from sarnet.checkpoint import LAST, CheckpointError, load_model, read_checkpoint, resume_path, run_dir_of, stored_run
from sarnet.config import ConfigError, build, validate
from sarnet.data.sources import DataError
from sarnet.io import read_json, write_json
from sarnet.settings import SampleSettings

log = logging.getLogger("sarnet")


class TrainingStopped(RuntimeError):
    """Training stopped itself (a non-finite loss or weights): one line, with the checkpoint that was kept."""


# bad config, checkpoint, data or run dir, faults of the disk and a stopped training: one line, no traceback
USER_ERRORS = (ConfigError, CheckpointError, DataError, rundir.RunDirError, OSError, TrainingStopped)


def run_job(cfg: DictConfig) -> float | None:
    """One job: bad input refused (exit status 2) before any work, the run dir left as found; a multirun's failed
    job recorded (results.json status=failed) and the sweep goes on."""
    try:
        net = validate(cfg)  # bad input first: fields before torch, the rest before the lock or any data
    except Exception as e:
        return failed(cfg, e, 2)
    from lightning.pytorch.utilities import rank_zero_only  # the rank of this process (Lightning's DDP, srun, torchrun)
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    output_dir = Path(cfg.paths.output_dir)
    found = set(os.listdir(output_dir)) if output_dir.is_dir() else set()  # Hydra's .hydra, an earlier launch's
    lock, progress = None, {}  # run() sets progress["fit"] when training starts: from then on it is not a refusal
    _sigterm.seen, previous = False, signal.signal(signal.SIGTERM, _sigterm)
    try:
        lock = rundir.lock_run_dir(output_dir) if rank_zero_only.rank == 0 else None  # one writer per run dir: rank 0
        return run(cfg, net, progress)
    except SIGTERMException:  # Lightning's at the next batch, or _sigterm's outside fit and test (a SystemExit)
        stopped(cfg, lock)
    except (KeyboardInterrupt, SystemExit) as e:  # Ctrl-C: Lightning's fit and test end it with sys.exit(1)
        if not isinstance(e.__context__ if isinstance(e, SystemExit) else e, KeyboardInterrupt):
            raise
        _sigterm.seen = True  # the SIGTERM a sweep's parent sends next, and a second Ctrl-C, change nothing
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        stopped(cfg, lock, signal.SIGINT)
    except Exception as e:
        if not isinstance(e, USER_ERRORS) or lock is None or progress.get("fit"):  # the dir is not ours to clean
            return failed(cfg, e, 2 if isinstance(e, rundir.RunDirBusy) else 1)
        keep = found | {".hydra", *["train.log"] * (HydraConfig.get().mode.name == "MULTIRUN")}
        for path in set(output_dir.iterdir()) - {output_dir / k for k in keep}:  # what this refused launch made:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()  # the held lock too
        return failed(cfg, e, 2)
    finally:
        rundir.unlock_run_dir(lock)
        signal.signal(signal.SIGTERM, previous)


def _sigterm(signum, frame):
    """SIGTERM outside fit and test stops the run as Lightning's handler (which calls this after its own) does inside.
    Only the first counts: scancel signals every process of a step, a sweep passes its own on."""
    from lightning.pytorch.utilities.exceptions import SIGTERMException

    first, _sigterm.seen = not _sigterm.seen, True
    if first and signal.getsignal(signal.SIGTERM) is _sigterm:
        raise SIGTERMException


def stopped(cfg: DictConfig, lock, signum=signal.SIGTERM):
    """SIGTERM (preemption, scancel, kill) or Ctrl-C: the run is recorded as stopped with the command that resumes it,
    and the process ends with 128 + the signal, in a sweep too: a preempted node must not go on to the next job."""
    hc, last = HydraConfig.get(), Path(cfg.paths.output_dir) / LAST
    worker = multiprocessing.parent_process() is not None  # a joblib worker: its sys.argv is not the sweep's
    if hc.mode.name == "MULTIRUN":
        how = f"to resume the sweep: {rundir.relaunch_command(sweep_dir=hc.sweep.dir)}" if not worker else \
            f"to resume the sweep, relaunch it with hydra.sweep.dir={hc.sweep.dir}"
    else:
        how = f"to resume: {rundir.relaunch_command(run_dir=last.parents[1])}" if last.exists() else \
            f"to start again: {rundir.relaunch_command()}"
    held = f"{last} holds the last finished epoch" if last.exists() else "no checkpoint yet"
    failed(cfg, rundir.RunDirError(f"stopped by {signum.name} before the run finished ({held}); {how}"), 128 + signum)
    if worker:  # SystemExit would end this job only, and the worker would take the next one
        rundir.unlock_run_dir(lock)  # after results.json: a joblib sweep's parent waits for every job's release
        logging.shutdown()
        os.kill(os.getppid(), signal.SIGTERM)  # a worker signalled alone stops the sweep (rundir.StopWorkersOnSigterm)
        multiprocessing.parent_process().join()  # which ends every worker once all have recorded their jobs
        os._exit(128 + signum)
    sys.exit(128 + signum)


def failed(cfg: DictConfig, e: Exception, rc: int):
    if HydraConfig.get().mode.name != "MULTIRUN":
        if isinstance(e, USER_ERRORS):  # bad input: its one-line message says which field and the fix
            line = f"{type(e).__module__}.{type(e).__name__}: {e}"
            log.error(line) if rc != 2 else print(line, file=sys.stderr, flush=True)  # a refusal: no train.log
            if rc == 2:
                drop_new_run_dir(Path(cfg.paths.output_dir))
            sys.exit(rc)
        raise e
    from lightning.pytorch.utilities import rank_zero_only

    log.error("job failed: %s: %s", type(e).__name__, e, exc_info=not isinstance(e, USER_ERRORS))
    if isinstance(e, rundir.RunDirBusy) or rank_zero_only.rank != 0:  # the dir is another process's (SweepReport
        return None  # counts a job dir without results.json as failed), or rank 0's to record (srun's DDP ranks)
    path = Path(cfg.paths.output_dir) / "results.json"
    if rc == 2 and (done := read_json(path)).get("status") == "ok":
        write_json(path, done | {"refused": f"{type(e).__name__}: {e}"})
        return None  # a refused relaunch of a finished job: its results stay, the refusal beside them (SweepReport)
    write_json(path, {"status": "failed", "error": f"{type(e).__name__}: {e}", "latent_dim": cfg.get("latent_dim"),
                      "model": HydraConfig.get().runtime.choices.get("model"), "seed": cfg.get("seed")})
    wandb = sys.modules.get("wandb")  # not imported: no run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1)
    return None  # a sweeper (Optuna) records a failed trial and goes on (a nan would end its search)


def drop_new_run_dir(out: Path):
    """No run, no run dir: the dir this refused launch made (rundir.WritableOutput), holding only what Hydra wrote for
    it, goes with the parents it made once empty (a typo leaves no outputs/<date>/<time>), and Hydra's handler of its
    train.log (else a process that goes on, as train.py run in-process, would fail at its next log record)."""
    made = rundir.WritableOutput.made
    if made[:1] == [str(out)] and set(os.listdir(out)) <= {".hydra", "train.log"}:
        root = logging.getLogger()
        for h in [h for h in root.handlers if Path(getattr(h, "baseFilename", "/")).parent == out]:
            root.removeHandler(h)
            h.close()
        shutil.rmtree(out, ignore_errors=True)
        for parent in made[1:]:  # not if another launch's run dir is there now
            with contextlib.suppress(OSError):
                os.rmdir(parent)


def run(cfg: DictConfig, net, progress: dict) -> float | None:
    """Train, test and evaluate `net`, the network validate(cfg) built; progress["fit"]: training has started."""
    from sarnet.module import NonFiniteLossError
    from sarnet.resume import NonFiniteWeightsError

    start, output_dir = time.time(), Path(cfg.paths.output_dir)
    done = read_json(output_dir / "results.json")  # finished with this very config: a relaunched sweep skips the job
    if cfg.get("ckpt_path") is not None and cfg.get("init_ckpt") is None:  # as prepare() fills it from the checkpoint
        cfg.init_ckpt = done.get("init_ckpt")
    if done.get("status") == "ok" and done.get("config_sha256") == config_sha256(cfg):
        if done.pop("refused", None):  # by a relaunch with another config since: this one is the run's own
            write_json(output_dir / "results.json", done)
        log.info("%s finished earlier with this same config: nothing to do (delete its results.json to test and "
                 "score it again)", output_dir)
        return optimized(cfg, done["metrics"])
    code = code_version()  # this launch's code, before anything can change under a long run
    ckpt_path, resume_state = prepare(cfg, net, output_dir)
    if ckpt_path is None and done.get("status") == "ok":  # trained afresh, it would overwrite what that run left
        raise ConfigError(f"{output_dir} holds a run finished with another config (its results.json) and no {LAST} "
                          f"to resume it from: pick another run dir, or delete its results.json to train it afresh")
    trainer, module, datamodule = build_run(cfg, net, ckpt_path, resume_state)
    progress["fit"] = True
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except (NonFiniteLossError, NonFiniteWeightsError) as e:
        last = output_dir / LAST
        raise TrainingStopped(f"{e} ({last if last.exists() else 'none was written yet'})") from None
    # a relaunched finished run trains nothing: its val/train metrics are those of the checkpoint it resumed
    metrics = resume_state.earlier.get("metrics", {}) | scalar_metrics(trainer.callback_metrics)
    evaluated = evaluate(cfg, trainer, module, datamodule, metrics)
    wall_time_s = resume_state.earlier_s + time.time() - start  # every launch of this run, not just this one
    return record(cfg, trainer, datamodule, module.net, evaluated, code, wall_time_s)


def prepare(cfg: DictConfig, net, output_dir: Path):
    """The checkpoints this launch reads, checked before any data or model work: the one it resumes (-> its path and
    the ResumeState that goes on from it), or init_ckpt's weights, loaded into `net`."""
    from sarnet.resume import ResumeState, check_drift

    ckpt_path, ckpt = resolve_ckpt(cfg, output_dir)
    if ckpt_path is not None:
        override, earlier = check_drift(cfg, ckpt, ckpt_path), stored_run(ckpt)
        # resumed with ckpt_path=, which comes without init_ckpt: the weights it started from are in its checkpoint
        cfg.init_ckpt = cfg.init_ckpt or earlier["config"].get("init_ckpt")
        for path in filter(Path.exists, checkpoint_files(cfg)):  # best.ckpt too: test and FID will read it
            read_checkpoint(path, why="in the run dir being resumed; delete it to start afresh")
        return ckpt_path, ResumeState(cfg, override, earlier)
    if cfg.init_ckpt is not None:  # a new run from another's weights: fresh optimizer, lr schedule and epoch count
        init = resume_path(cfg.init_ckpt)  # a run dir: its last checkpoint
        theirs, ours = read_checkpoint(init, why="given as init_ckpt")["sarnet"]["net"], net.config
        if theirs != ours:  # equal shapes are not enough: the masks follow the geometry
            fields = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in sorted(set(theirs) | set(ours))
                               if theirs.get(k) != ours.get(k))
            raise ConfigError(f"init_ckpt={cfg.init_ckpt} holds another net than model.net builds ({fields}): give "
                              f"that checkpoint's model.net, or drop init_ckpt")
        net.load_state_dict(load_model(init).state_dict(), strict=True)  # the weights only
        log.info("starting from the weights of init_ckpt=%s", cfg.init_ckpt)
    return None, ResumeState(cfg)


def build_run(cfg: DictConfig, net, ckpt_path: str | None, resume_state):
    """Everything that can refuse its arguments is built before any data is read or anything is written; then the
    data are read and checked, and the loggers start writing into the run dir. -> trainer, module, datamodule"""
    import lightning as L
    from lightning.pytorch.utilities import rank_zero_only

    from sarnet.callbacks import console
    from sarnet.module import count_parameters
    from sarnet.resume import AtomicCheckpointIO, continue_csv

    output_dir, choices = Path(cfg.paths.output_dir), HydraConfig.get().runtime.choices
    trainer_cfg, console_callbacks = console(cfg.trainer)
    module = instantiate(cfg.model, net=net, eval_seed=cfg.seed)  # evaluation noise from the run's seed
    callbacks = [build(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c is not None]
    datamodule = build(cfg.data, "data", DataError)
    if cfg.fid.enabled and rank_zero_only.rank == 0:  # the FID feature network too (sha256, or trained here on first
        from sarnet.metrics.fid import load_classifier  # use), not after training; rank 0 alone scores FID
        load_classifier(datamodule.dataset, datamodule.root)
    trainer = build(trainer_cfg, "trainer", logger=False, plugins=[AtomicCheckpointIO()],
                    callbacks=[*callbacks, resume_state, *console_callbacks])  # it logs the devices it found
    params = count_parameters(net)
    log.info("%s on %s, seed %s -> %s (%s); %s: %.3g M parameters, %.3g M of them not masked out; loading the data",
             choices.get("model"), choices.get("data"), cfg.seed, output_dir, f"resuming {ckpt_path}" if ckpt_path
             else "new run", type(net).__name__, params["dense"] / 1e6, params["effective"] / 1e6)
    L.seed_everything(cfg.seed, workers=True)
    keep_freed_memory()  # training allocates weight-sized tensors every step: reuse them (sarnet/__init__.py)
    datamodule.prepare_data()
    datamodule.setup("fit")  # the data's own checks (IDX headers) before the loggers write into the run dir
    rundir.check_writable(output_dir, *{p.parent for p in checkpoint_files(cfg)})
    # the W&B logger is sarnet.tracking's (a name, a group, a resumable id, offline when online cannot work)
    trainer.loggers = [tracking.make_logger(cfg, node, output_dir, net) if name == "wandb" else instantiate(node)
                       for name, node in (cfg.get("logger") or {}).items() if node is not None]
    if ckpt_path:
        continue_csv(trainer.loggers, ckpt_path)
    return trainer, module, datamodule


def evaluate(cfg: DictConfig, trainer, module, datamodule, metrics: dict) -> dict:
    """Test, FID, kNN and likelihood, all of the same weights: with eval_ckpt=best the best checkpoint's, else those
    training ended with. -> results.json's fields of what was evaluated and how, the metrics included."""
    output_dir, callback, eval_epoch = Path(cfg.paths.output_dir), trainer.checkpoint_callback, trainer.current_epoch
    eval_ckpt = (callback.best_model_path if callback and cfg.eval_ckpt == "best" else "") or None
    if cfg.eval_ckpt == "best" and not eval_ckpt:
        log.warning("eval_ckpt=best but no best checkpoint was saved (no val/loss?): evaluating the last weights")
    elif eval_ckpt:  # written during this fit or an earlier one: checked as every other checkpoint is
        ckpt = read_checkpoint(eval_ckpt, why="the best checkpoint, which test and FID evaluate; delete it and "
                                              "relaunch with eval_ckpt=last, or re-train")
        eval_epoch = ckpt["epoch"] + 1  # the epochs trained when it was saved, counted as "epochs" is
        module.load_state_dict(ckpt["state_dict"])
    if cfg.run_test:  # the VAEs' test noise is per image (module.image_noise): nothing to seed here
        log.info("testing the %s weights", "best" if eval_ckpt else "last")
        tested = trainer.test(module, datamodule=datamodule, verbose=False)
        metrics.update(scalar_metrics(tested[0] if tested else {}))
    fid, scores = None, {}
    if cfg.fid.enabled and trainer.is_global_zero:
        from sarnet.evaluate import evaluate_fid
        fid = evaluate_fid(module.net, datamodule, cfg, say=log.info)
        for at, r in [("", fid), *((f"@th={th}", r) for th, r in fid["matched"].items())]:
            scores |= {f"fid{at}/mean": r["mean"], f"fid{at}/std": r["std"]}
        if fid["knn"]:
            scores["knn/accuracy"] = fid["knn"]["accuracy"]
    if cfg.likelihood.enabled and trainer.is_global_zero:
        from sarnet.likelihood import evaluate_likelihood  # test NLL / bits/dim on the same weights as test
        scores |= evaluate_likelihood(module.net, datamodule, cfg.likelihood)["metrics"]
    metrics.update(scores)
    for lg in trainer.loggers if scores else []:
        lg.log_metrics(scores, step=trainer.global_step)
        lg.save()  # the CSV logger buffers until save(); training is over, nothing else would flush these
    path = Path(eval_ckpt) if eval_ckpt else output_dir / LAST
    # what a table cell depends on: the weights evaluated (eval_score: their checkpoint's own score; val/loss in
    # metrics is the last epoch's), how images were sampled, how FID was measured
    return {"eval_ckpt": "best" if eval_ckpt else "last", "eval_epoch": eval_epoch, "eval_score": {
        "monitor": callback.monitor, "mode": callback.mode, "value": float(callback.best_model_score)}
        if eval_ckpt and callback.best_model_score is not None else None,
        "checkpoint": os.path.relpath(path, output_dir) if path.exists() else None,
        "sampling": SampleSettings.of(cfg.sample).record(module.net.out_activation),
        **{f"fid_{k}": fid[k] if fid else None for k in ("protocol", "values", "matched")},
        "knn": fid["knn"] if fid else None, "metrics": metrics}


def record(cfg: DictConfig, trainer, datamodule, net, evaluated: dict, code, wall_time_s: float) -> float | None:
    """results.json (rank 0), the run's W&B summary and files, and the line that ends the run."""
    import torch

    from sarnet.module import count_parameters

    choices, output_dir = HydraConfig.get().runtime.choices, Path(cfg.paths.output_dir)
    device, threads = trainer.strategy.root_device, torch.get_num_threads()
    results = {
        **{k: choices.get(k) for k in ("model", "data", "loss")}, "dataset": datamodule.dataset,
        "classes": datamodule.classes, "latent_dim": net.latent_dim or None,
        # patch 0 copied from the input ("given", the reference's) or generated ("predicted"): tables never merge them
        "first_patch": net.ar_net.first_patch if net.ar_net is not None else None, "seed": cfg.seed,
        "init_ckpt": cfg.init_ckpt,  # the weights this run started from (null: a fresh initialisation)
        "epochs": trainer.current_epoch, "steps": trainer.global_step, "params": count_parameters(net),
        "precision": str(trainer.precision),  # as Lightning ran it: 32-true, bf16-mixed, ...
        **evaluated, "config_sha256": config_sha256(cfg), "code": code, "wall_time_s": wall_time_s,
        # what the wall time was spent on (times of different machines do not compare): the GPU, or CPU and threads
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
        f"{device.type} {platform.machine()}, {threads} thread{'s' * (threads != 1)}", "status": "ok"}
    if trainer.is_global_zero:
        write_json(output_dir / "results.json", results)
        tracking.finish(trainer.loggers, cfg, results, output_dir, checkpoint_files(cfg))
        log.info("done: %s", summary_line(results, output_dir))
    return optimized(cfg, results["metrics"])


def resolve_ckpt(cfg: DictConfig, output_dir: Path) -> tuple[str | None, dict | None]:
    """The checkpoint this launch resumes (-> its path, its contents): ckpt_path's (its run dir is this launch's:
    conf/config.yaml), else the run dir's own last.ckpt."""
    path, why = resume_path(cfg.ckpt_path), f"given as ckpt_path={cfg.ckpt_path}"  # check_fields refused a bad one
    if path is None:
        path, why = output_dir / LAST, "found in the run dir, so train.py resumes from it; delete it to start afresh"
        if not path.exists():
            return None, None
    elif run_dir_of(path) != output_dir.resolve():
        raise ConfigError(f"ckpt_path={cfg.ckpt_path} continues the run in {run_dir_of(path)}, not in {output_dir}: "
                          f"drop hydra.run.dir (a sweep resumes with hydra.sweep.dir=<its dir>), or start a new run "
                          f"from its weights with init_ckpt")
    return str(path), read_checkpoint(path, why=why)  # never an unpickling traceback or wrong weights


def checkpoint_files(cfg) -> list[Path]:
    """The files the checkpoint callbacks write (best.ckpt, last.ckpt), from their dirpath and filename."""
    return [Path(node.dirpath) / f"{node.filename}.ckpt" for node in (cfg.get("callbacks") or {}).values()
            if node is not None and node.get("dirpath") and node.get("filename")]


def scalar_metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if not hasattr(v, "numel") or v.numel() == 1}


def config_sha256(cfg: DictConfig) -> str:
    """The resolved config a run was launched with, where it resumed from and where its dir is aside (a copied run is
    the same run), as one hash: results.json has it."""
    resolved = OmegaConf.to_container(cfg, resolve=True)
    resolved.pop("ckpt_path", None)
    out = json.dumps(str(cfg.paths.output_dir))[1:-1]  # as json.dumps writes it: non-ASCII and backslashes escaped
    text = json.dumps(resolved, sort_keys=True, default=str).replace(out, "<run dir>")
    return hashlib.sha256(text.encode()).hexdigest()


def code_version() -> dict | None:
    """The git commit that ran and whether tracked files had changes (a seed's initial weights depend on the code's
    order of random draws, not on the config alone); None unless the package is the top of a git checkout."""
    root = Path(__file__).resolve().parents[1]  # --git-dir: never a checkout the package is installed inside
    try:  # --exclude=*: the commit, never a tag's name
        out = subprocess.run(["git", f"--git-dir={root / '.git'}", "describe", "--always", "--dirty", "--abbrev=40",
                              "--exclude=*"], cwd=root, capture_output=True, text=True, timeout=30, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    commit, _, dirty = out.stdout.strip().partition("-")
    return {"commit": commit, "dirty": dirty == "dirty"}


def optimized(cfg: DictConfig, metrics: dict) -> float | None:
    """What a sweeper (hparams_search=...) optimizes; None, a failed trial to Optuna, if this run lacks the metric or
    it is not finite (Optuna's tell refuses nan)."""
    value = metrics.get(cfg.optimized_metric) if cfg.get("optimized_metric") else None
    return value if value is not None and math.isfinite(value) else None


def summary_line(results: dict, output_dir: Path) -> str:
    """The line that ends a run: headline metrics (± std or standard error), the weights, the time, the run dir."""
    m = results["metrics"]
    keys = ["train/loss", "val/loss", "test/loss", "test/mse", "test/nll", "test/bpd", "fid/mean",
            *[k for k in m if k.startswith("fid@") and k.endswith("/mean") and m[k] != m.get("fid/mean")],
            "knn/accuracy"]
    parts = [f"{k} {m[k]:.4g}" + "".join(f" ± {m[s]:.2g}" for s in (k.replace("/mean", "/std"), f"{k}_se")
                                         if s != k and s in m) for k in keys if k in m]
    return ", ".join(parts) + f"; {results['eval_ckpt']} weights (epoch {results['eval_epoch']} of " \
        f"{results['epochs']}), {results['wall_time_s']:.0f} s in all; run dir {output_dir}"
