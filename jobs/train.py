"""Train IRN on Ray Train from a YAML config with dotlist overrides.

    ray job submit --working-dir . -- python jobs/train.py configs/train/irn_x2.yaml train.iterations=1000 \
        data.train=$PWD/../shared/datasets/photos/train data.val=$PWD/../shared/datasets/photos/val \
        run.storage_path=$PWD/runs/ray          # or s3://bucket/prefix (+ data.storage.endpoint_url=...)
    python jobs/train.py configs/train/ray_cpu_x2.yaml run.stop_after=200     # embedded local Ray

Running it again with the same run.storage_path and run.name resumes from the latest checkpoint.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

# `python jobs/train.py` puts jobs/ on sys.path; the project root must be there too (and Ray passes the
# driver's path on to its workers).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from training.config import ConfigError, check_submitted_paths, load_job_config  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="jobs/train.py", description=__doc__.splitlines()[0])
    p.add_argument("config", help="YAML config (sections train, data, ray, run)")
    p.add_argument("overrides", nargs="*", help="dotlist overrides, e.g. train.iterations=1000 ray.num_workers=2")
    args = p.parse_args(argv)
    try:
        job = load_job_config(args.config, args.overrides)
        check_submitted_paths(job)
    except ConfigError as e:
        print(f"jobs/train.py: error: {e}", file=sys.stderr)
        return 2
    from training.ray_train import run_training  # imports Ray: only after the config is known to be valid

    run_training(job)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
