"""jobs/ingest.py and jobs/restore.py exit codes: 2 when a job cannot run, 1 for errors with fail_on_error."""
from __future__ import annotations

from pathlib import Path

from irn_batch.pipeline.entry import job_main

pytest_plugins = ["pipeline_fixtures"]
CONFIGS = Path(__file__).resolve().parents[1] / "configs"


def test_bad_configuration_exits_2_and_names_the_key(capsys):
    assert job_main("ingest", CONFIGS / "ingest.yaml", ["input=a", "output=b", "nosuchkey=1"]) == 2
    assert "nosuchkey" in capsys.readouterr().err
    assert job_main("restore", CONFIGS / "restore.yaml", ["output=b"]) == 2
    assert "input" in capsys.readouterr().err


def test_fail_on_error_turns_an_error_row_into_exit_1(ray_session, tmp_path, tiny_ckpt_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"not a png")
    args = [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}", f"model={tiny_ckpt_path}", "actors.pool_size=1"]
    assert job_main("ingest", CONFIGS / "ingest.yaml", args) == 0
    assert job_main("ingest", CONFIGS / "ingest.yaml", [*args, "retry_errors=true", "fail_on_error=true"]) == 1
    assert "bad.png" in capsys.readouterr().out


def test_gpu_actors_on_a_cluster_without_gpus_fail_fast(ray_session, tmp_path, tiny_ckpt_path, capsys):
    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "bad.png").write_bytes(b"not a png")
    args = [f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}", f"model={tiny_ckpt_path}", "actors.num_gpus=1"]
    assert job_main("ingest", CONFIGS / "ingest.yaml", args) == 2
    assert "num_gpus=1.0 but the cluster has 0 GPUs" in capsys.readouterr().err
