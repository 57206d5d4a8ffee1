"""Ray Train: a 2-worker CPU TorchTrainer reads images from the loopback S3 server, stores its checkpoints
there, and a second launch with the same name resumes from the latest checkpoint. The FailureConfig
drill (a worker fails once, the group restarts from the checkpoint) is slow: run with --runslow."""
from __future__ import annotations

import json

import pytest
from safetensors import safe_open

from irn_batch.model.checkpoint import checkpoint_from_bytes
from irn_batch.storage import StorageConfig, open_fs
from training.config import load_job_config

pytest_plugins = ["pipeline_fixtures"]

TINY = [
    "train.blocks=1", "train.growth=8", "train.patch=16", "train.batch=4", "train.bf16=false",
    "train.val_crop=32", "train.warmup=0", "ray.num_workers=2", "ray.cpus_per_worker=1", "ray.max_failures=0",
    "run.ckpt_every=2", "run.val_every=2", "run.log_every=1", "run.keep_checkpoints=5",
]


@pytest.fixture(scope="module")
def s3_data(s3_endpoint):
    from pipeline_fixtures import make_bucket, png_bytes, smooth_image

    fs = make_bucket(s3_endpoint, "irn-train")
    for i in range(4):
        fs.pipe_file(f"irn-train/photos/train/p{i}.png", png_bytes(smooth_image(40, 48, seed=i)))
    for i in range(2):
        fs.pipe_file(f"irn-train/photos/val/v{i}.png", png_bytes(smooth_image(36, 36, seed=10 + i)))
    fs.pipe_file("irn-train/photos/train/bad.png", b"not an image")  # skipped, does not stop training
    return fs


def _job(endpoint: str, tmp_path, iterations: int, *extra: str):
    return load_job_config("configs/train/ray_cpu_x2.yaml", TINY + [
        f"train.iterations={iterations}",
        "data.train=s3://irn-train/photos/train",
        "data.val=s3://irn-train/photos/val",
        f"data.cache_dir={tmp_path / 'cache'}",
        f"data.storage.endpoint_url={endpoint}",
        "run.storage_path=s3://irn-train/runs",
        "run.name=resume_test",
    ] + list(extra))  # extras last: they override the defaults above


def _checkpoints(fs) -> list[str]:
    return sorted(p.rsplit("/", 1)[-1] for p in fs.ls("irn-train/runs/resume_test") if "checkpoint_0" in p)


def test_two_workers_checkpoint_to_s3_and_resume(ray_session, s3_endpoint, s3_data, tmp_path):
    from training.ray_train import run_training

    first = run_training(_job(s3_endpoint, tmp_path, 4), log=lambda m: None)
    assert first["iteration"] == 4
    fs = s3_data
    fs.invalidate_cache()
    assert _checkpoints(fs) == ["checkpoint_00000002", "checkpoint_00000004"]
    assert {"state.safetensors", "model.safetensors", "history.json"} <= {
        p.rsplit("/", 1)[-1] for p in fs.ls("irn-train/runs/resume_test/checkpoint_00000004")}

    second = run_training(_job(s3_endpoint, tmp_path, 6), log=lambda m: None)
    assert second["iteration"] == 6
    fs.invalidate_cache()
    assert _checkpoints(fs) == ["checkpoint_00000002", "checkpoint_00000004", "checkpoint_00000006"]
    last = "irn-train/runs/resume_test/checkpoint_00000006"
    local = tmp_path / "state.safetensors"
    fs.get(f"{last}/state.safetensors", str(local))
    with safe_open(str(local), "pt") as f:
        assert f.metadata()["iteration"] == "6"
    ckpt = checkpoint_from_bytes(fs.cat_file(f"{last}/model.safetensors"))
    assert ckpt.model.scale == 2 and ckpt.metadata["trained_iterations"] == "6"

    # The history spans both launches: train records 1..6 once each, validation at 2, 4, 6.
    history = json.loads(fs.cat_file(f"{last}/history.json"))
    assert [r["iteration"] for r in history if r["kind"] == "train"] == [1, 2, 3, 4, 5, 6]
    assert [r["iteration"] for r in history if r["kind"] == "val"] == [2, 4, 6]
    assert all(r["loss"] > 0 and r["lr"] > 0 for r in history if r["kind"] == "train")
    # Report files next to the checkpoints, in the same bucket.
    rfs, root = open_fs("s3://irn-train/runs/resume_test/report", StorageConfig(endpoint_url=s3_endpoint))
    csv = rfs.cat_file(f"{root}/metrics.csv").decode().splitlines()
    assert len(csv) == 1 + 9 and rfs.cat_file(f"{root}/val_curve.png").startswith(b"\x89PNG")


@pytest.mark.slow
def test_failure_config_restarts_the_workers_from_the_latest_checkpoint(ray_session, s3_endpoint, s3_data, tmp_path):
    """The last worker fails once at iteration 3 (run.fail_at); max_failures=1 restarts the group, which
    resumes from checkpoint 2 (or from scratch if that report had not been registered yet) and finishes."""
    from training.ray_train import run_training

    job = _job(s3_endpoint, tmp_path, 4, "run.fail_at=3", "ray.max_failures=1",
               f"run.storage_path={tmp_path / 'runs'}", "run.name=drill")
    assert run_training(job, log=lambda m: None)["iteration"] == 4
    assert (tmp_path / "runs" / "drill" / ".failure_drill_3").exists()  # the failure did happen
    history = json.loads((tmp_path / "runs" / "drill" / "checkpoint_00000004" / "history.json").read_text())
    assert [r["iteration"] for r in history if r["kind"] == "train"] == [1, 2, 3, 4]


def test_jobs_train_rejects_a_typo_before_starting_ray(capsys):
    import importlib.util

    spec = importlib.util.spec_from_file_location("jobs_train", "jobs/train.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main(["configs/train/irn_x2.yaml", "train.itrations=5"]) == 2
    assert "itrations" in capsys.readouterr().err
