"""Restore job: `python jobs/restore.py input=MANIFEST_OR_PREFIX output=URL [key=value ...]` (or ray job submit).

Defaults come from configs/restore.yaml; any setting can be overridden with an OmegaConf dotlist entry.
Without a cluster address (ray.address / RAY_ADDRESS) an embedded local Ray is started.
"""
from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout or a `ray job submit` working dir without installing

from irn_batch.pipeline.entry import job_main  # noqa: E402

if __name__ == "__main__":
    raise SystemExit(job_main("restore", ROOT / "configs" / "restore.yaml", doc=__doc__))
