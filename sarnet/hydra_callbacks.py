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
        rows = [json.loads(p.read_text()) | {"dir": p.parent.name} for p in sorted(sweep.glob("*/results.json"))]
        failed = [r for r in rows if r.get("status") != "ok"]
        log.info("sweep %s: %d jobs ok, %d failed", sweep, len(rows) - len(failed), len(failed))
        for r in failed:
            log.error("  failed: %s: %s", r["dir"], r.get("error"))
        if failed:
            sys.exit(1)  # the other jobs' results are kept; the sweep as a whole is reported as failed
