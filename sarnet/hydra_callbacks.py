"""Hydra callback: after a multirun, report which jobs failed (their results.json says why) and exit non-zero."""

import json
import logging
import sys
from pathlib import Path

from hydra.experimental.callback import Callback

log = logging.getLogger("sarnet")


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
        if failed:
            sys.exit(1)  # the other jobs' results are kept; the sweep as a whole is reported as failed
