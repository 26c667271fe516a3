"""Hydra callback: after a multirun, report which jobs failed (their results.json says why), make the FID table
(when the sweep computed FIDs) and exit non-zero if any job failed."""

import json
import logging
import subprocess
import sys
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

log = logging.getLogger("sarnet")
FID_TABLE = Path(__file__).resolve().parents[1] / "scripts" / "fid_table.py"


class SweepReport(Callback):
    def on_multirun_end(self, config, **kwargs):
        sweep = Path(config.hydra.sweep.dir)
        rows = []
        for job in sorted(p.parent.parent for p in sweep.glob("*/.hydra/config.yaml")):
            path = job / "results.json"
            try:
                rows.append(json.loads(path.read_text()) | {"dir": job.name})
            except (OSError, ValueError) as e:  # killed, refused (another process held the dir) or unreadable
                rows.append({"dir": job.name, "status": "failed", "error": f"no readable results.json ({e})"})
        failed = [r for r in rows if r.get("status") != "ok"]
        log.info("sweep %s: %d jobs ok, %d failed", sweep, len(rows) - len(failed), len(failed))
        for r in failed:
            log.error("  failed: %s: %s", r["dir"], r.get("error"))
        if OmegaConf.select(config, "fid.enabled") and len(rows) > len(failed):
            fid_table(sweep, wandb=OmegaConf.select(config, "logger.wandb") is not None)
        if failed:
            sys.exit(1)  # the other jobs' results are kept; the sweep as a whole is reported as failed


def fid_table(sweep: Path, wandb: bool):
    """scripts/fid_table.py on the sweep: <sweep>/fid_table.{md,png,json}, and a W&B run in the sweep's group.
    A subprocess: its plotting and W&B run stay out of this process, and a failure here costs no job's results."""
    log.info("sweep %s: FID table -> %s", sweep, sweep / "fid_table.md")
    cmd = [sys.executable, str(FID_TABLE), str(sweep), *(["--wandb"] if wandb else [])]
    proc = subprocess.run(cmd, check=False)
    if proc.returncode:
        log.error("scripts/fid_table.py failed (exit %d); rerun: %s", proc.returncode, " ".join(cmd))


class WritableOutput(Callback):
    """Hydra creates the run (or sweep) dir and writes .hydra/ into it before train.py's code runs: on a read-only
    or full disk that is a Hydra traceback. Checked first here, in the one-line form train.py uses."""

    def on_run_start(self, config, **kwargs):
        _probe(config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs):
        _probe(config.hydra.sweep.dir)


def _probe(folder):
    from sarnet.rundir import RunDirError, check_writable

    try:
        check_writable(folder)
    except RunDirError as e:
        print(f"sarnet.rundir.RunDirError: {e}", file=sys.stderr)
        sys.exit(1)
