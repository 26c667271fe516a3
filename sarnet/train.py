"""What train.py does: compose -> validate -> seed -> instantiate -> fit -> test -> evaluate -> results.json."""

import json
import logging
import os
import secrets
import sys
import time
from pathlib import Path

import torch  # validation builds the net anyway; the heavy libraries wait until the config is known to be good
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sarnet import tracking
from sarnet.checkpoint import CheckpointError, read_checkpoint
from sarnet.config import ConfigError, validate
from sarnet.data.sources import DataError, atomic_write

log = logging.getLogger("sarnet")
USER_ERRORS = (ConfigError, CheckpointError, DataError)  # bad config, checkpoint or data: no traceback


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
    name = node.get("name") or tracking.run_name(choices, getattr(net, "latent_dim", 0), cfg.seed,
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
    for lg in loggers:
        if type(lg).__name__ != "WandbLogger":
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
    if not Path(cfg.ckpt_path).exists():
        raise CheckpointError(f"ckpt_path={cfg.ckpt_path} does not exist: give an existing .ckpt file, or 'last'")
    check_checkpoint(cfg.ckpt_path, f"given as ckpt_path={cfg.ckpt_path}")
    return str(cfg.ckpt_path)


def check_checkpoint(path, why: str):
    """A damaged checkpoint is one clear error naming the file, never an unpickling traceback or wrong weights."""
    try:
        read_checkpoint(path)  # also checks the zip's CRC32s
    except CheckpointError as e:
        raise CheckpointError(f"{e} ({why})") from None


def write_json(path: Path, payload: dict):
    atomic_write(path, json.dumps(payload, indent=2, default=float).encode())  # never a half-written results.json


def scalar_metrics(metrics: dict) -> dict:
    return {k: float(v) for k, v in metrics.items() if torch.is_tensor(v) and v.numel() == 1 or
            isinstance(v, (int, float))}


def run_job(cfg: DictConfig) -> float | None:
    """One job. In a multirun a failing job is recorded (results.json status=failed) and the sweep goes on."""
    try:
        return run(cfg)
    except Exception as e:
        if HydraConfig.get().mode.name != "MULTIRUN":
            if isinstance(e, USER_ERRORS):  # bad input: its one-line message says which field and the fix
                log.error("%s.%s: %s", type(e).__module__, type(e).__name__, e)  # console and train.log
                sys.exit(1)
            raise
        log.exception("job failed")
        write_json(Path(cfg.paths.output_dir) / "results.json",
                   {"status": "failed", "error": f"{type(e).__name__}: {e}", "latent_dim": cfg.get("latent_dim"),
                    "model": HydraConfig.get().runtime.choices.get("model"), "seed": cfg.get("seed")})
        wandb = sys.modules.get("wandb")  # not imported: no run to close
        if wandb is not None and wandb.run is not None:
            wandb.finish(exit_code=1)
        return None


def run(cfg: DictConfig) -> float | None:
    validate(cfg)  # before the heavy imports below: a bad override is refused in about a second
    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt(cfg, output_dir)  # a damaged checkpoint fails here, before any data or model work
    choices = HydraConfig.get().runtime.choices
    log.info("%s on %s, seed %s -> %s (%s); loading libraries and data", choices.get("model"), choices.get("data"),
             cfg.seed, output_dir, f"resuming {ckpt_path}" if ckpt_path else "new run")

    import lightning as L

    from sarnet.module import count_parameters
    from sarnet.resume import AtomicCheckpointIO, FlushLogs, continue_csv

    L.seed_everything(cfg.seed, workers=True)
    datamodule = instantiate(cfg.data)
    loss = instantiate(cfg.loss)
    module = instantiate(cfg.model, loss=loss)
    # Set after instantiate: passed as an argument, Hydra would build the net a second time from its _target_.
    module.net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = build_loggers(cfg, output_dir, module.net)
    if ckpt_path:
        continue_csv(loggers, ckpt_path)
    trainer = instantiate(cfg.trainer, logger=loggers or False, callbacks=[*callbacks, FlushLogs()],
                          plugins=[AtomicCheckpointIO()])

    trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path)
    metrics = scalar_metrics(trainer.callback_metrics)
    # Test and FID evaluate the same weights: the best checkpoint by val/loss, or the weights training ended with.
    best = trainer.checkpoint_callback.best_model_path if trainer.checkpoint_callback else ""
    want_best = cfg.get("eval_ckpt", "best") == "best"
    if want_best and not best:
        log.warning("eval_ckpt=best but no best checkpoint was saved (no val/loss?): evaluating the last weights")
    eval_ckpt = best if want_best and best else None
    if eval_ckpt and not cfg.run_test:
        module.load_state_dict(read_checkpoint(eval_ckpt)["state_dict"])
    if cfg.run_test:
        log.info("testing the %s weights", "best" if eval_ckpt else "last")
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=eval_ckpt, verbose=False)
        metrics.update(scalar_metrics(tested[0] if tested else {}))

    fid = None
    if cfg.fid.enabled and trainer.is_global_zero:
        from sarnet.evaluate import evaluate_fid
        fid = evaluate_fid(module.net, datamodule, cfg, say=log.info)
        metrics.update({"fid/mean": fid["mean"], "fid/std": fid["std"]})
        for lg in loggers:
            lg.log_metrics({"fid/mean": fid["mean"], "fid/std": fid["std"]}, step=trainer.global_step)

    results = {
        "model": choices.get("model"),
        "data": choices.get("data"),
        "loss": choices.get("loss"),
        "latent_dim": getattr(module.net, "latent_dim", 0) or None,
        "seed": cfg.seed,
        "epochs": trainer.current_epoch,
        "steps": trainer.global_step,
        "params": count_parameters(module.net),
        "eval_ckpt": "best" if eval_ckpt else "last",
        "metrics": metrics,
        "wall_time_s": time.time() - start,
        "status": "ok",
    }
    if trainer.is_global_zero:
        write_json(output_dir / "results.json", results)
        wandb_summary(loggers, results, fid)
    for lg in loggers:
        if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
            lg.experiment.finish()  # one W&B run per job, also between the jobs of a multirun
    log.info("done: %s", summary_line(results, output_dir))
    return metrics.get("val/loss")


def summary_line(results: dict, output_dir: Path) -> str:
    """One line to end a run with: the losses, FID, time and where everything is."""
    m = results["metrics"]
    parts = [f"{k} {m[k]:.4g}" for k in ("train/loss", "val/loss", "test/loss", "test/mse") if k in m]
    if "fid/mean" in m:
        parts.append(f"FID {m['fid/mean']:.3f} ± {m['fid/std']:.3f}")
    parts.append(f"{results['epochs']} epochs in {results['wall_time_s']:.0f} s")
    return ", ".join(parts) + f"; run dir {output_dir}"
