"""The command line shared by jobs/ingest.py and jobs/restore.py: YAML defaults + dotlist overrides -> run."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from irn_batch.errors import one_line
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.settings import SecretSettingError, load_config
from irn_batch.storage import is_unreachable


def job_main(kind: str, default_config: Path, argv: list[str] | None = None, doc: str = "") -> int:
    """Parse, run, print the summary; 2 when the job cannot run, 1 when fail_on_error is set and an image failed."""
    parser = argparse.ArgumentParser(prog=f"jobs/{kind}.py", description=doc.splitlines()[0] if doc else None)
    parser.add_argument("--config", default=str(default_config), help="YAML defaults")
    parser.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. input=s3://bucket/prefix")
    args = parser.parse_args(argv)
    schema = IngestConfig if kind == "ingest" else RestoreConfig
    try:
        cfg = load_config(schema, args.config, args.overrides)
    except SecretSettingError as e:  # before anything is logged or Ray starts
        print(f"{kind}: refused: {e}", file=sys.stderr)
        return 2
    except Exception as e:  # OmegaConf's messages name the bad key
        print(f"{kind}: bad configuration: {str(e).splitlines()[0]}", file=sys.stderr)
        return 2
    if kind == "ingest":
        from irn_batch.pipeline.ingest import run_ingest as run
    else:
        from irn_batch.pipeline.restore import run_restore as run
    try:
        summary = run(cfg)
    except ValueError as e:  # a request that cannot run at all: wrong model, no such input, no GPUs, ...
        print(f"{kind}: error: {one_line(e, 2000)}", file=sys.stderr)  # (storage faults: StorageError)
        return 2
    except Exception as e:  # a storage fault that reached us untranslated: still one line, not a traceback
        if not (isinstance(e, OSError) or is_unreachable(e) or type(e).__module__.startswith("botocore")):
            raise
        print(f"{kind}: error: storage: {type(e).__name__}: {one_line(e, 2000)}", file=sys.stderr)
        return 2
    print(f"manifest: {summary['manifest']} (job {summary['job_id']})")
    return 1 if cfg.fail_on_error and summary["error"] else 0

