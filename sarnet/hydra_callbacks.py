"""Hydra callbacks (conf/config.yaml): a writable output dir before Hydra writes, a sweep's report and FID table,
and a SIGTERMed sweep of worker processes that records every running job."""

import contextlib
import json
import logging
import multiprocessing
import os
import signal
import sys
import time
from pathlib import Path

from hydra.experimental.callback import Callback
from omegaconf import OmegaConf

from sarnet.rundir import RunDirError, check_writable, relaunch_command, running_jobs

log = logging.getLogger("sarnet")


class SweepReport(Callback):
    """After a multirun: the failed jobs (their results.json says why), the FID table, exit status 1 on a failure."""

    def on_multirun_end(self, config, **kwargs):
        sweep, rows = Path(config.hydra.sweep.dir), []
        for job in sorted(p.parent.parent for p in sweep.glob("*/.hydra/config.yaml")):
            try:
                rows.append(json.loads((job / "results.json").read_text()) | {"dir": job.name})
            except (OSError, ValueError) as e:  # killed, refused (another process held the dir) or unreadable
                rows.append({"dir": job.name, "status": "failed", "error": f"no readable results.json ({e})"})
        failed = [r for r in rows if r.get("status") != "ok"]
        log.info("sweep %s: %d jobs ok, %d failed", sweep, len(rows) - len(failed), len(failed))
        for r in failed:
            log.error("  failed: %s: %s", r["dir"], r.get("error"))
        if OmegaConf.select(config, "fid.enabled") and len(rows) > len(failed):
            from sarnet import table

            wandb = OmegaConf.select(config, "logger.wandb") is not None
            log.info("sweep %s: FID table -> %s", sweep, sweep / "fid_table.md")
            try:
                table.write([sweep], wandb=wandb)
            except Exception as e:  # noqa: BLE001 -- the jobs are done; the table can be rebuilt from their results
                log.error("FID table failed (%s: %s); rerun: sarnet table %s%s", type(e).__name__, e, sweep,
                          " --wandb" * wandb)
        if failed:
            log.error("to resume or retry them (finished jobs are skipped): %s", relaunch_command(sweep_dir=sweep))
            sys.exit(1)  # the other jobs' results are kept; the sweep as a whole is reported as failed


class StopWorkersOnSigterm(Callback):
    """SIGTERM to a sweep of worker processes (hydra/launcher=joblib) would end the parent alone, its workers training
    on, orphaned: pass it to the workers that hold a job, wait until each has recorded its job as stopped, and end
    with 128 + SIGTERM, starting no other job. A worker signalled itself signals the parent (sarnet/train.py)."""

    def on_multirun_start(self, config, **kwargs):
        if not str(OmegaConf.select(config, "hydra.launcher._target_")).endswith("BasicLauncher"):
            signal.signal(signal.SIGTERM, lambda signum, frame: _stop_workers(config.hydra.sweep.dir))


def _stop_workers(sweep_dir):
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: scancel signals every process, a stopped worker us too
    jobs = running_jobs(sweep_dir)  # {run dir lock: worker pid}; an idle worker is left alone (see below)
    log.error("sweep: SIGTERM: stopping %d worker process(es); each records its job as stopped; to resume the "
              "sweep: %s", len(jobs), relaunch_command(sweep_dir=sweep_dir))
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
        os.kill(worker.pid, signal.SIGKILL)  # loky's processes have no .kill()
        worker.join()
    os._exit(128 + signal.SIGTERM)  # not SystemExit: joblib would go on to hand out the remaining jobs


class WritableOutput(Callback):
    """Hydra writes .hydra/ into the run (sweep) dir before train.py runs: a read-only or full disk is refused here,
    in train.py's one-line form, not as Hydra's traceback."""

    def on_run_start(self, config, **kwargs):
        _probe(config.hydra.run.dir)

    def on_multirun_start(self, config, **kwargs):
        _probe(config.hydra.sweep.dir)


def _probe(folder):
    try:
        check_writable(folder)
    except RunDirError as e:
        print(f"sarnet.rundir.RunDirError: {e}", file=sys.stderr)
        sys.exit(1)
