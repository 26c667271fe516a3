"""W&B around a run: online only when it can work, readable names and groups, one W&B run per job (also on resume).

Nothing here imports wandb at module level: train.py must refuse a bad config before any heavy import.
"""

import functools
import json
import logging
import os
import socket
import threading
from pathlib import Path
from urllib.parse import urlparse

log = logging.getLogger("sarnet")
RUN_FILE = "wandb_run.json"  # in the run dir: the W&B id (a relaunch resumes it), project, group, name
PROBE_TIMEOUT_S = 3.0
SYNC_HINT = "upload it later with `wandb sync <run dir>/wandb/offline-run-*` (a sweep: `make wandb-sync SWEEP=...`)"


def base_url() -> str:
    return os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai")


def has_api_key() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = Path.home() / ".netrc"
    host = urlparse(base_url()).hostname or "api.wandb.ai"
    return netrc.exists() and host in netrc.read_text(errors="ignore")


@functools.cache  # once per process: the jobs of a multirun share the answer instead of probing each time
def reachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> bool:
    """A TCP connection to the W&B server within `timeout` s. In a daemon thread, because the DNS lookup inside
    create_connection ignores the socket timeout; without this probe wandb.init stalls ~100 s, then raises."""
    parsed = urlparse(url)
    address = (parsed.hostname or "", parsed.port or (443 if parsed.scheme == "https" else 80))
    answer = []

    def probe():
        try:
            socket.create_connection(address, timeout=timeout).close()
            answer.append(True)
        except OSError:
            pass

    thread = threading.Thread(target=probe, daemon=True)
    thread.start()
    thread.join(timeout)
    return bool(answer)


def choose_mode(offline: bool | None = None) -> str:
    """'online' only with an API key and a reachable server, else 'offline' (or WANDB_MODE=disabled), with one
    line saying why when online was wanted. W&B never prompts, hangs, or loses a run to the network.
    offline: the config's logger.wandb.offline (null = decide from the key and WANDB_MODE)."""
    env = os.environ.get("WANDB_MODE", "").lower()
    if offline is True or env in ("offline", "dryrun", "disabled"):
        return "disabled" if env == "disabled" else "offline"
    if not (env == "online" or offline is False or has_api_key()):
        return "offline"  # nobody asked for online: no message
    if not has_api_key():
        log.warning("W&B: online mode asked for but no API key is configured (WANDB_API_KEY or `wandb login`): "
                    "logging offline; %s", SYNC_HINT)
        return "offline"
    if not reachable(base_url()):
        log.warning("W&B: %s is not reachable (no answer in %.0f s): logging offline; %s", base_url(),
                    PROBE_TIMEOUT_S, SYNC_HINT)
        return "offline"
    return "online"


def sweep_group(sweep_dir) -> str:
    """A sweep's readable W&B group: its dir's path under multirun/ ("2026-11-25/13-01-58", "fid_table"), or the
    dir's own name when it is elsewhere."""
    parts = Path(os.path.abspath(sweep_dir)).parts
    if "multirun" in parts[:-1]:
        i = len(parts) - 1 - parts[::-1].index("multirun")
        return "/".join(parts[i + 1:])
    return parts[-1]


def run_name(choices: dict, latent_dim, seed, task_overrides, exclude=()) -> str:
    """<model>-L<latent>-s<seed>, then the command-line overrides that say something else ("data=mnist")."""
    model = choices.get("model") or "model"
    name = f"{model}-L{latent_dim}-s{seed}" if latent_dim else f"{model}-s{seed}"
    shown = {"model", "latent_dim", "seed", *exclude}
    extra = [o for o in task_overrides if o.split("=", 1)[0].lstrip("+~") not in shown and not o.startswith("hydra")]
    return " ".join([name, *extra])[:128]


def read_run_file(run_dir) -> dict:
    try:
        return json.loads((Path(run_dir) / RUN_FILE).read_text())
    except (OSError, ValueError):
        return {}


def write_run_file(run_dir, info: dict):
    from sarnet.io import atomic_write
    atomic_write(Path(run_dir) / RUN_FILE, json.dumps(info, indent=2).encode())


def sweep_wandb(dirs) -> dict:
    """{project, group} of the W&B runs of the jobs under dirs (from their run files), else the defaults."""
    for d in dirs:
        for path in sorted(Path(d).rglob(RUN_FILE)):
            info = read_run_file(path.parent)
            if info.get("group"):
                return {"project": info.get("project") or "sarnet", "group": info["group"]}
    return {"project": "sarnet", "group": sweep_group(dirs[0])}
