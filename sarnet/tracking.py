"""W&B around a run: online only when it can work, one W&B run per job (resumed with it) with a readable name and
group, and what the run leaves there. wandb is imported inside the functions: a bad config is refused before it."""

import contextlib
import functools
import logging
import os
import secrets
import shutil
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

from omegaconf import OmegaConf

from sarnet.io import read_json, write_json

log = logging.getLogger("sarnet")
RUN_FILE = "wandb_run.json"  # in the run dir: the W&B id (a relaunch resumes it), project, group, name
PROBE_TIMEOUT_S = 3.0
SYNC_HINT = "upload it later with `wandb sync <run dir>/wandb/offline-run-*` (a sweep: `make wandb-sync SWEEP=...`)"


@functools.cache  # once per process: the jobs of a multirun share the answer
def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection to the server within `timeout` s (else wandb.init stalls ~100 s, then raises), in a daemon
    thread: the DNS lookup inside create_connection ignores the socket's timeout."""
    parsed, answer = urlparse(url), []
    address = (parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80))

    def probe():
        with contextlib.suppress(OSError):
            socket.create_connection(address, timeout=timeout).close()
            answer.append(True)

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer)


def choose_mode(offline: bool | None = None) -> str:
    """'online' only with an API key and a reachable server, else 'offline' (or WANDB_MODE=disabled), saying why in
    one line when online was wanted: W&B never prompts, hangs, or loses a run. offline: logger.wandb.offline."""
    env, url = os.environ.get("WANDB_MODE", "").lower(), os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")
    if offline is True or env in ("offline", "dryrun", "disabled"):
        return "disabled" if env == "disabled" else "offline"
    netrc = Path.home() / ".netrc"  # where `wandb login` keeps the key
    key = bool(os.environ.get("WANDB_API_KEY")) or netrc.exists() and \
        str(urlparse(url).hostname) in netrc.read_text(errors="ignore")
    if not (env == "online" or offline is False or key):
        return "offline"  # nobody asked for online: no message
    why = "online mode asked for but no API key is configured (WANDB_API_KEY or `wandb login`)" if not key else \
        None if reachable(url) else f"{url} is not reachable (no answer in {PROBE_TIMEOUT_S:.0f} s)"
    if why:
        log.warning("W&B: %s: logging offline; %s", why, SYNC_HINT)
    return "offline" if why else "online"


def sweep_group(sweep_dir) -> str:
    """A sweep's W&B group: its dir's path under multirun/ ("2026-11-25/13-01-58", "fid_table"), else its name."""
    parts = Path(os.path.abspath(sweep_dir)).parts
    return "/".join(parts[len(parts) - parts[::-1].index("multirun"):]) if "multirun" in parts[:-1] else parts[-1]


def run_name(choices: dict, latent_dim, seed, task_overrides, exclude=()) -> str:
    """<model>-L<latent>-s<seed>, then the command-line overrides that say something else ("data=mnist")."""
    name = f"{choices.get('model') or 'model'}-" + (f"L{latent_dim}-" if latent_dim else "") + f"s{seed}"
    shown = {"model", "latent_dim", "seed", *exclude}
    extra = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") not in shown and not o.startswith("hydra")]
    return " ".join([name, *extra])[:128]


def sweep_wandb(dirs) -> dict:
    """{project, group} of the W&B runs of the jobs under dirs (from their run files), else the defaults."""
    for info in (read_json(p) for d in dirs for p in sorted(Path(d).rglob(RUN_FILE))):
        if info.get("group"):
            return {"project": info.get("project") or "sarnet", "group": info["group"]}
    return {"project": "sarnet", "group": sweep_group(dirs[0])}


def make_logger(cfg, node, output_dir: Path, net):
    """logger.wandb's _target_ (Lightning's WandbLogger) with a readable name, group, tags and config, and the id a
    relaunch into this run dir resumes; offline if going online fails."""
    import wandb
    from hydra.core.hydra_config import HydraConfig
    from hydra.utils import instantiate
    from lightning.pytorch.utilities import rank_zero_only

    from sarnet.module import count_parameters

    hc, params, previous = HydraConfig.get(), count_parameters(net), read_json(output_dir / RUN_FILE)
    choices, sweep, mode = hc.runtime.choices, hc.mode.name == "MULTIRUN", choose_mode(node.get("offline"))
    name = node.get("name") or run_name(choices, net.latent_dim, cfg.seed, hc.overrides.task,
                                        hc.job.config.override_dirname.exclude_keys)
    group = node.get("group") or (sweep_group(hc.sweep.dir) if sweep else name)  # `sarnet fid --wandb` & co. join it
    # a W&B sweep agent names the run it expects; `secrets`, not `random`: seed_everything made that repeat
    run_id = (None if sweep else os.environ.get("WANDB_RUN_ID")) or previous.get("id") or secrets.token_hex(4)
    if rank_zero_only.rank == 0:
        write_json(output_dir / RUN_FILE, {"id": run_id, "project": node.get("project"), "group": group, "name": name,
                                           "mode": mode})
    groups = ("model", "data", "loss")  # the config has their nodes; the choices' names to filter runs by
    config = OmegaConf.to_container(cfg, resolve=True) | {f"{k}_name": choices.get(k) for k in groups} | {
        "params_dense": params["dense"], "params_effective": params["effective"], "resumed": bool(previous)}
    tags = [str(choices.get(k)) for k in groups if choices.get(k)]
    for attempt in [mode, *["offline"] * (mode == "online")]:
        if attempt == "offline":
            os.environ["WANDB_MODE"] = "offline"  # also for later jobs of a multirun and the sweep's table
        try:  # offline and log_model are sarnet's (the mode; finish() logs the checkpoints), not Lightning's
            logger = instantiate({**OmegaConf.to_container(node, resolve=True), "config": config}, _recursive_=False,
                                 _convert_="all", offline=False, log_model=False, name=name, group=group, id=run_id,
                                 tags=tags, mode=attempt, settings=wandb.Settings(init_timeout=30, silent=True))
            logger._wandb_init.pop("anonymous", None)  # Lightning passes None, which wandb warns of in every run
            if attempt == "online":
                logger.experiment  # noqa: B018 -- start the run now, so that a failure can still go offline
            return logger
        except Exception as e:  # noqa: BLE001 -- whatever the network or server says, the run must go on
            if attempt != "online":
                raise
            log.warning("W&B: going online failed (%s: %s): logging offline; %s", type(e).__name__,
                        str(e).splitlines()[0] if str(e) else "", SYNC_HINT)


def finish(loggers, cfg, results: dict, output_dir: Path, checkpoints):
    """Into each W&B run, then closed: the summary (metrics, FID per set, status), results.json and the resolved config
    as files, with logger.wandb.log_model the checkpoints as one version of the artifact model-<run id>."""
    import wandb
    from lightning.pytorch.loggers import WandbLogger

    for run in (lg.experiment for lg in loggers if isinstance(lg, WandbLogger)):
        sets = {f"fid/set_{i + 1}": v for i, v in enumerate(results["fid_values"] or [])}
        run.summary.update(results["metrics"] | sets | {k: results[k] for k in ("status", "wall_time_s", "eval_ckpt",
                                                                                "epochs")})
        files, kept = Path(run.dir), Path(run.dir).parent / "checkpoints"
        try:
            shutil.copyfile(output_dir / "results.json", files / "results.json")
            (files / "resolved_config.yaml").write_text(OmegaConf.to_yaml(cfg, resolve=True))
            for name in ("results.json", "resolved_config.yaml"):
                run.save(str(files / name), base_path=run.dir, policy="now")
            if OmegaConf.select(cfg, "logger.wandb.log_model", default=False):
                art = wandb.Artifact(f"model-{run.id}", type="model", metadata={
                    "eval_ckpt": results["eval_ckpt"], "epochs": results["epochs"], **results["metrics"]})
                kept.mkdir(exist_ok=True)
                # hard links: a checkpoint is renamed over, never rewritten, so the link keeps this version's bytes
                # until uploaded (`wandb sync` too) at no extra disk
                for path in (Path(p) for p in checkpoints if Path(p).is_file()):
                    (link := kept / path.name).unlink(missing_ok=True)
                    try:
                        os.link(path, link)
                    except OSError:  # a filesystem without hard links: a copy
                        shutil.copyfile(path, link)
                    art.add_file(str(link), name=path.name, policy="immutable")
                run.log_artifact(art, aliases=["latest", f"epoch-{results['epochs']}"])
        except Exception as e:  # noqa: BLE001 -- the run is done and its results.json written: W&B must not undo it
            log.warning("W&B: could not save the run's files or checkpoints (%s: %s); they are in %s",
                        type(e).__name__, e, output_dir)
        run.finish()
