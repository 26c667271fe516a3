"""Hydra callbacks (conf/config.yaml): a writable output dir before Hydra writes into it, a sweep's report and FID
table, and a SIGTERMed sweep of worker processes that records every running job."""

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

log = logging.getLogger("sarnet")


class SweepReport(Callback):
    """After a multirun: which jobs failed (their results.json says why), the FID table when the sweep computed FIDs,
    and exit status 1 if any job failed."""

    def on_multirun_end(self, config, **kwargs):
        from sarnet.rundir import relaunch_command

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
                          " --wandb" if wandb else "")
        if failed:
            log.error("to resume or retry them (finished jobs are skipped): %s", relaunch_command(sweep_dir=sweep))
            sys.exit(1)  # the other jobs' results are kept; the sweep as a whole is reported as failed


class StopWorkersOnSigterm(Callback):
    """A sweep whose jobs run in worker processes (hydra/launcher=joblib): SIGTERM to the sweep (scancel, a
    preempted node, `kill`) would end the parent alone, and its workers would train on, orphaned and unseen. Pass
    the signal on to the workers that hold a job instead, so that each records its job as stopped (results.json)
    as a single run does, wait until every one has, and end the sweep with 128 + SIGTERM without starting another
    job. A worker that is signalled itself records its job and signals the parent, which then stops the others."""

    def on_multirun_start(self, config, **kwargs):
        if not str(OmegaConf.select(config, "hydra.launcher._target_")).endswith("BasicLauncher"):
            signal.signal(signal.SIGTERM, lambda signum, frame: _stop_workers(config.hydra.sweep.dir))


def _stop_workers(sweep_dir):
    from sarnet.rundir import relaunch_command, running_jobs

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
