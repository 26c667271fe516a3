"""What train.py does: compose -> validate -> seed -> instantiate -> fit -> test -> evaluate -> results.json."""

import hashlib
import json
import logging
import multiprocessing
import os
import secrets
import shutil
import signal
import sys
import time
from pathlib import Path

from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sarnet import tracking
from sarnet.checkpoint import CheckpointError, read_checkpoint  # light: torch waits until the config is good
from sarnet.config import ConfigError, build, validate
from sarnet.data.sources import DataError
from sarnet.io import atomic_write
from sarnet.rundir import RunDirBusy, RunDirError, check_writable, lock_run_dir, unlock_run_dir

log = logging.getLogger("sarnet")


class TrainingStopped(RuntimeError):
    """Training stopped itself (a non-finite loss or weights): one line, with the checkpoint that was kept."""


# bad config, checkpoint, data or run dir, faults of the disk and a stopped training: one line, no traceback
USER_ERRORS = (ConfigError, CheckpointError, DataError, RunDirError, OSError, TrainingStopped)


def build_loggers(cfg: DictConfig, output_dir: Path, net) -> list:
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        loggers.append(make_wandb_logger(cfg, node, output_dir, net) if name == "wandb" else instantiate(node))
    return loggers


def make_wandb_logger(cfg: DictConfig, node: DictConfig, output_dir: Path, net):
    """One W&B run per job with a readable name, group, tags and config; a relaunch into the same run dir resumes
    the same W&B run (its id is kept in the run dir). Falls back to offline if going online fails."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    from sarnet.module import count_parameters

    hc = HydraConfig.get()
    choices = hc.runtime.choices
    mode = tracking.choose_mode(node.get("offline"))
    if mode == "offline":
        os_environ_offline()
    sweep = hc.mode.name == "MULTIRUN"
    group = node.get("group") or (tracking.sweep_group(hc.sweep.dir) if sweep else None)
    name = node.get("name") or tracking.run_name(choices, net.latent_dim, cfg.seed,
                                                 hc.overrides.task, hc.job.config.override_dirname.exclude_keys)
    tags = [str(choices.get(k)) for k in ("model", "data", "loss") if choices.get(k)]
    previous = tracking.read_run_file(output_dir)
    run_id = previous.get("id") or secrets.token_hex(4)  # not `random`: seed_everything made it repeat
    params = count_parameters(net)
    config = OmegaConf.to_container(cfg, resolve=True) | {
        "model_name": choices.get("model"), "data_name": choices.get("data"), "loss_name": choices.get("loss"),
        "params_dense": params["dense"], "params_effective": params["effective"], "run_dir": str(output_dir),
        "fid_protocol": OmegaConf.to_container(cfg.fid, resolve=True) | {"sample": dict(cfg.sample)},
        "resumed": bool(previous)}
    kwargs = {k: v for k, v in OmegaConf.to_container(node, resolve=True).items()
              if k not in ("_target_", "offline", "group", "name")}
    kwargs.setdefault("job_type", "train")
    info = {"id": run_id, "project": kwargs.get("project"), "group": group, "name": name, "mode": mode}
    if int(os.environ.get("RANK", "0")) == 0:  # DDP: the launching process writes it, once
        tracking.write_run_file(output_dir, info)

    def make(mode):
        return WandbLogger(**kwargs, name=name, group=group, id=run_id, resume="allow", tags=tags, config=config,
                           mode=mode, settings=wandb.Settings(init_timeout=30, silent=True))

    logger = make(mode)
    if mode == "online":
        try:
            logger.experiment  # noqa: B018 -- start the run now, so a failure here can still go offline
        except Exception as e:  # noqa: BLE001 -- whatever the network or server says, the run must go on
            log.warning("W&B: going online failed (%s: %s): logging offline; %s", type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "", tracking.SYNC_HINT)
            os_environ_offline()
            logger = make("offline")
    return logger


def os_environ_offline():
    """Offline for this process and its children (later jobs of a multirun, the sweep's fid_table.py)."""
    os.environ["WANDB_MODE"] = "offline"


def wandb_summary(loggers, results: dict, fid: dict | None):
    """What a person looks for first in the W&B runs table: test metrics, FID (mean, std, per set), status."""
    from lightning.pytorch.loggers import WandbLogger
    for lg in loggers:
        if not isinstance(lg, WandbLogger):
            continue
        summary = dict(results["metrics"])
        if fid is not None:
            summary |= {f"fid/set_{i + 1}": v for i, v in enumerate(fid["values"])}
        summary |= {"status": results["status"], "wall_time_s": results["wall_time_s"],
                    "eval_ckpt": results["eval_ckpt"], "epochs": results["epochs"]}
        lg.experiment.summary.update(summary)


def resolve_ckpt(cfg: DictConfig, output_dir: Path) -> str | None:
    """ckpt_path=last means this run dir's last.ckpt; a run re-launched into a dir that has one resumes it."""
    last = output_dir / "checkpoints" / "last.ckpt"
    if cfg.ckpt_path in (None, "last"):
        if last.exists():
            check_checkpoint(last, "found in the run dir, so train.py resumes from it; delete it to start afresh")
            return str(last)
        if cfg.ckpt_path == "last":
            raise CheckpointError(f"ckpt_path=last but {last} does not exist: nothing to resume; drop ckpt_path "
                                  f"to start afresh")
        return None
    check_checkpoint(cfg.ckpt_path, f"given as ckpt_path={cfg.ckpt_path}")
    return str(cfg.ckpt_path)


def init_weights(cfg: DictConfig, net, resuming: bool) -> dict | None:
    """init_ckpt: a new run that starts from another run's weights (fine-tuning, a warm restart of a schedule) with a
    fresh optimizer, lr schedule and epoch count. -> the net's state dict, checked before any data or model work."""
    path = cfg.get("init_ckpt")
    if path is None or resuming:  # a resumed run's own checkpoint already holds what init_ckpt started it from
        return None
    ckpt = check_checkpoint(path, f"given as init_ckpt={path}")
    if ckpt["sarnet"]["net"] != net.config:  # equal shapes are not enough: the masks follow the geometry
        theirs, ours = ckpt["sarnet"]["net"], net.config
        fields = ", ".join(f"{k}: {theirs.get(k)!r} -> {ours.get(k)!r}" for k in sorted(set(theirs) | set(ours))
                           if theirs.get(k) != ours.get(k))
        raise ConfigError(f"init_ckpt={path} holds another net than model.net builds ({fields}): give that "
                          f"checkpoint's model.net, or drop init_ckpt")
    return {k[len("net."):]: v for k, v in ckpt["state_dict"].items() if k.startswith("net.")}


def check_checkpoint(path, why: str) -> dict:
    """A damaged checkpoint is one clear error naming the file, never an unpickling traceback or wrong weights."""
    try:
        return read_checkpoint(path)  # also checks the zip's CRC32s
    except CheckpointError as e:
        raise CheckpointError(f"{e} ({why})") from None


def checkpoint_files(cfg) -> list[Path]:
    """The files the checkpoint callbacks write (best.ckpt, last.ckpt), from their dirpath and filename."""
    out = []
    for node in (cfg.get("callbacks") or {}).values():
        if node is not None and node.get("dirpath") and node.get("filename"):
            out.append(Path(node.dirpath) / f"{node.filename}.ckpt")
    return out


def write_json(path: Path, payload: dict):
    atomic_write(path, json.dumps(payload, indent=2, default=float).encode())  # never a half-written results.json


def best_score(callback) -> dict | None:
    """The monitored value the best checkpoint was chosen by (e.g. {"monitor": "val/loss", "value": 87.65})."""
    if callback is None or callback.best_model_score is None:
        return None
    return {"monitor": callback.monitor, "mode": callback.mode, "value": float(callback.best_model_score)}


def scalar_metrics(metrics: dict) -> dict:
    import torch

    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1 or
            isinstance(v, (int, float))}


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
    try:
        lock = lock_run_dir(output_dir)  # one writer per run dir (rank 0's: None on the others); released below
        return run(cfg, net, progress)
    except SIGTERMException:  # Lightning stops at the next batch and raises SystemExit(None): rc 0 otherwise
        last = Path(cfg.paths.output_dir) / "checkpoints" / "last.ckpt"
        failed(cfg, RunDirError(f"stopped by SIGTERM before the run finished; {last} holds the last finished "
                                f"epoch: relaunch the same command to resume"), 128 + signal.SIGTERM)
        # In a sweep too: a preempted or cancelled node must not go on to start the next job.
        if multiprocessing.parent_process() is not None:  # a joblib worker: SystemExit would end this job only,
            logging.shutdown()                            # and the worker would take the next one
            os._exit(128 + signal.SIGTERM)
        sys.exit(128 + signal.SIGTERM)
    except Exception as e:
        if not isinstance(e, USER_ERRORS) or lock is None or progress.get("fit"):
            return failed(cfg, e, 1)
        keep = found | {".hydra", *["train.log"] * (HydraConfig.get().mode.name == "MULTIRUN")}
        for path in set(output_dir.iterdir()) - {output_dir / k for k in keep}:  # what this refused launch made:
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()  # the held lock too
        return failed(cfg, e, 2)
    finally:
        unlock_run_dir(lock)


def failed(cfg: DictConfig, e: Exception, rc: int):
    if HydraConfig.get().mode.name != "MULTIRUN":
        if isinstance(e, USER_ERRORS):  # bad input: its one-line message says which field and the fix
            print(f"{type(e).__module__}.{type(e).__name__}: {e}", file=sys.stderr, flush=True)  # no train.log
            sys.exit(rc)
        raise e
    log.error("job failed: %s: %s", type(e).__name__, e, exc_info=not isinstance(e, USER_ERRORS))
    if isinstance(e, RunDirBusy):  # the dir is another process's: leave its results.json to it (SweepReport
        return None                # counts a job dir without results.json as failed)
    write_json(Path(cfg.paths.output_dir) / "results.json",
               {"status": "failed", "error": f"{type(e).__name__}: {e}", "latent_dim": cfg.get("latent_dim"),
                "model": HydraConfig.get().runtime.choices.get("model"), "seed": cfg.get("seed")})
    wandb = sys.modules.get("wandb")  # not imported: no run to close
    if wandb is not None and wandb.run is not None:
        wandb.finish(exit_code=1)
    return None


def config_sha256(cfg: DictConfig) -> str:
    """The resolved config a run was launched with, as one hash: results.json records it."""
    return hashlib.sha256(json.dumps(OmegaConf.to_container(cfg, resolve=True), sort_keys=True,
                                     default=str).encode()).hexdigest()


def sampling_record(sample: DictConfig, net) -> dict:
    """The sampling settings the run's images (and FID) depend on: method, th and z_scale always; the draw's mode and
    temperature when pixels are drawn; the noisy scheme's settings for a regression net (sampling.sample_images)."""
    record = {k: sample.get(k) for k in ("method", "th", "z_scale")}
    if sample.get("mode", "mean") != "mean":
        record |= {"mode": sample.mode, "temperature": sample.get("temperature", 1.0)}
    if net.out_activation == "none" and sample.get("regression"):
        record["regression"] = OmegaConf.to_container(sample.regression)
    return record


def code_version() -> dict | None:
    """The git commit of the code that ran and whether tracked files had uncommitted changes (new, untracked files
    are not counted), None unless the package sits at the top of a git checkout: a seed's initial weights, for one,
    depend on the code's order of random draws, not on the config alone."""
    import subprocess
    root = Path(__file__).resolve().parents[1]

    def git(*args):
        out = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, timeout=30)
        return out.stdout.strip() if out.returncode == 0 else None

    try:
        top, commit = git("rev-parse", "--show-toplevel"), git("rev-parse", "HEAD")
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.TimeoutExpired):
        return None
    if top is None or Path(top).resolve() != root or commit is None or status is None:
        return None
    return {"commit": commit, "dirty": bool(status)}


def device_record(trainer) -> str:
    """What the run's wall time was spent on: the GPU's name, or the CPU and the threads torch used."""
    import platform

    import torch
    device = trainer.strategy.root_device
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    threads = torch.get_num_threads()
    return f"{device.type} {platform.machine()}, {threads} thread{'s' * (threads != 1)}"


def finished_before(cfg: DictConfig, output_dir: Path) -> dict | None:
    """results.json of this run dir if it finished ("ok") with exactly this config: a relaunched sweep then skips
    the job instead of testing and scoring its FID again (minutes per finished job)."""
    try:
        results = json.loads((output_dir / "results.json").read_text())
    except (OSError, ValueError):
        return None
    ok = results.get("status") == "ok" and results.get("config_sha256") == config_sha256(cfg)
    return results if ok else None


def run(cfg: DictConfig, net, progress: dict) -> float | None:
    """Train, test and evaluate `net`, the network validate(cfg) built."""
    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    done = finished_before(cfg, output_dir)
    if done is not None:
        log.info("%s finished earlier with this same config: nothing to do (delete its results.json to test and "
                 "score it again)", output_dir)
        return done["metrics"].get("val/loss")
    code = code_version()  # this launch's code, before anything can change under a long run
    ckpt_path = resolve_ckpt(cfg, output_dir)  # a damaged checkpoint fails here, before any data or model work
    init_state = init_weights(cfg, net, resuming=ckpt_path is not None)
    choices = HydraConfig.get().runtime.choices

    import lightning as L
    import torch
    from lightning.pytorch.loggers import CSVLogger, WandbLogger
    from lightning.pytorch.utilities.seed import isolate_rng

    from sarnet import resume
    from sarnet.module import NonFiniteLossError, count_parameters

    optimizer_override = {}
    if ckpt_path:
        optimizer_override = resume.check_drift(cfg, read_checkpoint(ckpt_path), ckpt_path)
    for path in checkpoint_files(cfg):  # best.ckpt too: test and FID will read it
        if ckpt_path and path.exists():
            check_checkpoint(path, "in the run dir being resumed; delete it to start afresh")
    # Everything that can refuse its arguments is built before any data is read or anything is written.
    module = instantiate(cfg.model, net=net)  # the net validate() built, not a second one from model.net
    callbacks = [build(c, f"callbacks.{name}") for name, c in (cfg.get("callbacks") or {}).items() if c is not None]
    datamodule = build(cfg.data, "data", DataError)
    if cfg.fid.enabled:  # the FID feature network too (sha256, or trained here on first use), not after training
        from sarnet.metrics.fid import load_classifier
        load_classifier(datamodule.dataset, datamodule.root)
    resume_state = resume.ResumeState(cfg, optimizer_override)
    trainer = build(cfg.trainer, "trainer", logger=False, callbacks=[*callbacks, resume.FlushLogs(), resume_state],
                    plugins=[resume.AtomicCheckpointIO()])  # its own checks; it logs the devices it found
    log.info("%s on %s, seed %s -> %s (%s); loading the data", choices.get("model"), choices.get("data"), cfg.seed,
             output_dir, f"resuming {ckpt_path}" if ckpt_path else "new run")
    L.seed_everything(cfg.seed, workers=True)
    datamodule.prepare_data()
    datamodule.setup("fit")  # the data's own checks (IDX headers) before the loggers write into the run dir
    if init_state is not None:
        net.load_state_dict(init_state, strict=True)  # the weights only: the optimizer and schedule start afresh
        log.info("starting from the weights of init_ckpt=%s", cfg.init_ckpt)
    check_writable(output_dir, *{p.parent for p in checkpoint_files(cfg)})
    loggers = build_loggers(cfg, output_dir, module.net)
    if ckpt_path:
        resume.continue_csv(loggers, ckpt_path)
    trainer.loggers = loggers  # as Trainer(logger=loggers) would: the W&B and CSV loggers write into the run dir

    progress["fit"] = True
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    except (NonFiniteLossError, resume.NonFiniteWeightsError) as e:
        last = output_dir / "checkpoints" / "last.ckpt"
        raise TrainingStopped(f"{e} ({last if last.exists() else 'none was written yet'})") from None
    # A relaunched finished run trains nothing: its val/train metrics come from the checkpoint it resumed.
    metrics = {**(resume.stored_metrics(ckpt_path) if ckpt_path else {}), **scalar_metrics(trainer.callback_metrics)}
    # Test and FID evaluate the same weights: the best checkpoint by val/loss, or the weights training ended with.
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    want_best = cfg.get("eval_ckpt", "best") == "best"
    if want_best and not best:
        log.warning("eval_ckpt=best but no best checkpoint was saved (no val/loss?): evaluating the last weights")
    eval_ckpt = best if want_best and best else None
    eval_epoch = trainer.current_epoch
    if eval_ckpt:  # written during this fit or an earlier one: check it as every other checkpoint is checked
        eval_epoch = check_checkpoint(eval_ckpt, "the best checkpoint, which test and FID evaluate; delete it and "
                                                 "relaunch with eval_ckpt=last, or re-train")["epoch"] + 1
    if eval_ckpt and not cfg.run_test:
        module.load_state_dict(read_checkpoint(eval_ckpt)["state_dict"])
    if cfg.run_test:
        log.info("testing the %s weights", "best" if eval_ckpt else "last")
        # The VAEs sample z in the test loop too: seeded here, the test metrics depend on the weights and the seed
        # only, not on how the RNG got here (a relaunched finished run trains nothing before testing).
        with isolate_rng():
            torch.manual_seed(cfg.seed)
            tested = trainer.test(module, datamodule=datamodule, ckpt_path=eval_ckpt, verbose=False)
        metrics.update(scalar_metrics(tested[0] if tested else {}))

    fid = None
    if cfg.fid.enabled and trainer.is_global_zero:
        from sarnet.evaluate import evaluate_fid
        fid = evaluate_fid(module.net, datamodule, cfg, say=log.info)
        metrics.update({"fid/mean": fid["mean"], "fid/std": fid["std"]})
        for th, r in fid["matched"].items():
            metrics.update({f"fid@th={th}/mean": r["mean"], f"fid@th={th}/std": r["std"]})
        if fid["knn"]:
            metrics["knn/accuracy"] = fid["knn"]["accuracy"]
        for lg in loggers:
            lg.log_metrics({k: v for k, v in metrics.items() if k.startswith(("fid", "knn"))},
                           step=trainer.global_step)

    if cfg.get("likelihood") is not None and cfg.likelihood.enabled and trainer.is_global_zero:
        from sarnet.likelihood import evaluate_likelihood  # test NLL / bits/dim on the same weights as test
        likelihood = evaluate_likelihood(module.net, datamodule, cfg.likelihood)["metrics"]
        metrics.update(likelihood)
        for lg in loggers:
            lg.log_metrics(likelihood, step=trainer.global_step)

    for lg in loggers:
        if isinstance(lg, CSVLogger):
            lg.save()  # the CSV logger buffers until save(); training is over, nothing else would flush FID/NLL

    eval_path = Path(eval_ckpt) if eval_ckpt else output_dir / "checkpoints" / "last.ckpt"
    results = {
        "model": choices.get("model"),
        "data": choices.get("data"),
        "loss": choices.get("loss"),
        "dataset": datamodule.dataset,
        "classes": datamodule.classes,
        "latent_dim": module.net.latent_dim or None,
        "seed": cfg.seed,
        "init_ckpt": cfg.get("init_ckpt"),  # the weights this run started from (null: a fresh initialisation)
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "params": count_parameters(module.net),
        # what a table cell depends on: the weights evaluated, how images were sampled, how FID was measured
        "eval_ckpt": "best" if eval_ckpt else "last",
        "eval_epoch": eval_epoch,  # epochs trained when the evaluated weights were saved, counted as "epochs" is
        # metrics["val/loss"] is the last epoch's; the evaluated checkpoint's own score is this one
        "eval_score": best_score(trainer.checkpoint_callback) if eval_ckpt else None,
        "checkpoint": os.path.relpath(eval_path, output_dir) if eval_path.exists() else None,
        "sampling": sampling_record(cfg.sample, module.net),
        "fid_protocol": fid["protocol"] if fid else None,
        "fid_values": fid["values"] if fid else None,
        "fid_matched": fid["matched"] if fid else None,
        "knn": fid["knn"] if fid else None,
        "metrics": metrics,
        "config_sha256": config_sha256(cfg),
        "code": code,
        "wall_time_s": resume_state.earlier_s + time.time() - start,  # every launch of this run, not just this one
        "device": device_record(trainer),  # wall times of different machines do not compare
        "status": "ok",
    }
    if trainer.is_global_zero:
        write_json(output_dir / "results.json", results)
        wandb_summary(loggers, results, fid)
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.finish()  # one W&B run per job, also between the jobs of a multirun
    log.info("done: %s", summary_line(results, output_dir))
    return metrics.get("val/loss")


def summary_line(results: dict, output_dir: Path) -> str:
    """One line to end a run with: the losses, FID, time and where everything is."""
    m = results["metrics"]
    parts = [f"{k} {m[k]:.4g}" for k in ("train/loss", "val/loss", "test/loss", "test/mse") if k in m]
    if "fid/mean" in m:
        parts.append(f"FID {m['fid/mean']:.3f} ± {m['fid/std']:.3f}")
    if "knn/accuracy" in m:
        parts.append(f"kNN {100 * m['knn/accuracy']:.1f} %")
    parts.append(f"{results['epochs']} epochs in {results['wall_time_s']:.0f} s")
    return ", ".join(parts) + f"; run dir {output_dir}"
