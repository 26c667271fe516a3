"""What train.py does: compose -> validate -> seed -> instantiate -> fit -> test -> evaluate -> results.json."""

import json
import logging
import os
import sys
import time
from pathlib import Path

import lightning as L
import torch
from hydra.core.hydra_config import HydraConfig
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from sarnet.checkpoint import CheckpointError, read_checkpoint
from sarnet.config import ConfigError, validate
from sarnet.data.sources import DataError, atomic_write
from sarnet.module import count_parameters
from sarnet.resume import AtomicCheckpointIO, FlushLogs, continue_csv

log = logging.getLogger("sarnet")
USER_ERRORS = (ConfigError, CheckpointError, DataError)  # bad config, checkpoint or data: no traceback


def wandb_offline() -> bool:
    """Online only when an API key is configured; otherwise offline, so W&B never prompts or hangs."""
    mode = os.environ.get("WANDB_MODE", "")
    if mode:
        return mode != "online"
    if os.environ.get("WANDB_API_KEY"):
        return False
    netrc = Path.home() / ".netrc"
    return not (netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore"))


def build_loggers(cfg: DictConfig, output_dir: Path):
    loggers = []
    for name, node in (cfg.get("logger") or {}).items():
        if node is None:
            continue
        if name == "wandb":
            offline = wandb_offline() if node.get("offline") is None else bool(node.offline)
            if offline:
                os.environ.setdefault("WANDB_MODE", "offline")
            hc = HydraConfig.get()
            group = str(Path(hc.sweep.dir).name) if hc.mode.name == "MULTIRUN" else None
            config = OmegaConf.to_container(cfg, resolve=True)
            make = instantiate(node, offline=offline, group=node.group or group, _partial_=True)
            loggers.append(make(config=config))  # instantiate() reserves the name "config"
        else:
            loggers.append(instantiate(node))
    return loggers


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
        import wandb
        if wandb.run is not None:
            wandb.finish(exit_code=1)
        return None


def run(cfg: DictConfig) -> float | None:
    validate(cfg)
    start = time.time()
    output_dir = Path(cfg.paths.output_dir)
    ckpt_path = resolve_ckpt(cfg, output_dir)  # a damaged checkpoint fails here, before any data or model work
    L.seed_everything(cfg.seed, workers=True)

    datamodule = instantiate(cfg.data)
    loss = instantiate(cfg.loss)
    module = instantiate(cfg.model, loss=loss)
    # Set after instantiate: passed as an argument, Hydra would build the net a second time from its _target_.
    module.net_config = OmegaConf.to_container(cfg.model.net, resolve=True)
    callbacks = [instantiate(c) for c in (cfg.get("callbacks") or {}).values() if c is not None]
    loggers = build_loggers(cfg, output_dir)
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
        tested = trainer.test(module, datamodule=datamodule, ckpt_path=eval_ckpt, verbose=False)
        metrics.update(scalar_metrics(tested[0] if tested else {}))

    if cfg.fid.enabled and trainer.is_global_zero:
        from sarnet.evaluate import evaluate_fid
        fid = evaluate_fid(module.net, datamodule, cfg)
        metrics.update({"fid/mean": fid["mean"], "fid/std": fid["std"]})
        for lg in loggers:
            lg.log_metrics({"fid/mean": fid["mean"], "fid/std": fid["std"]}, step=trainer.global_step)

    if cfg.get("likelihood") is not None and cfg.likelihood.enabled and trainer.is_global_zero:
        from sarnet.likelihood import evaluate_likelihood  # test NLL / bits/dim on the same weights as test
        likelihood = evaluate_likelihood(module.net, datamodule, cfg.likelihood)["metrics"]
        metrics.update(likelihood)
        for lg in loggers:
            lg.log_metrics(likelihood, step=trainer.global_step)
            lg.save()  # the CSV logger buffers until save(); training is over, nothing else would flush it

    choices = HydraConfig.get().runtime.choices
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
    for lg in loggers:
        if hasattr(lg, "experiment") and type(lg).__name__ == "WandbLogger":
            lg.experiment.finish()  # one W&B run per job, also between the jobs of a multirun
    log.info("results: %s", json.dumps(results["metrics"]))
    return metrics.get("val/loss")
