"""Ingest job: `python jobs/ingest.py input=URL output=URL [key=value ...]` (or via `ray job submit`).

Defaults come from configs/ingest.yaml; any setting can be overridden with an OmegaConf dotlist entry.
Without a cluster address (ray.address / RAY_ADDRESS) an embedded local Ray is started.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # run from a checkout or a `ray job submit` working dir without installing

from irn_batch.pipeline.config import IngestConfig, load_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    """Parse, run, print the summary; exit 1 only when fail_on_error is set and some input failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "ingest.yaml"), help="YAML defaults")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. input=s3://bucket/raw")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(IngestConfig, args.config, args.overrides)
    except Exception as e:  # OmegaConf's messages name the bad key
        print(f"ingest: bad configuration: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    from irn_batch.pipeline.ingest import run_ingest

    summary = run_ingest(cfg)
    print(f"manifest: {summary['manifest']} (job {summary['job_id']})")
    return 1 if cfg.fail_on_error and summary["error"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
