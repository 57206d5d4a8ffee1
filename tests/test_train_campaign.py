"""The CPU campaign (issue 16): a run stopped on one machine resumes on another from the published weights.

The published folder (``run.publish_dir``) is what gets committed; a fresh clone has it and nothing else of
the run, so these tests resume into an empty OUT_DIR and check that the schedule continues, not restarts.
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from PIL import Image

from irn_batch.model.checkpoint import load_checkpoint, read_metadata
from training import local
from training.loop import TrainConfig, build_model

REPO = Path(__file__).resolve().parents[1]


def _write_images(root: Path, n: int, size=(40, 48), seed=0) -> None:
    root.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        y, x = np.mgrid[0 : size[0], 0 : size[1]]
        base = np.stack([(x * (3 + i) + y * 2) % 256, (y * 5 + i * 40) % 256, (x + y) * 2 % 256], -1)
        noisy = np.clip(base + rng.normal(0, 6, base.shape), 0, 255).astype(np.uint8)
        buf = io.BytesIO()
        Image.fromarray(noisy).save(buf, format="PNG")
        (root / f"im{i}.png").write_bytes(buf.getvalue())


@pytest.fixture
def tiny_campaign(tmp_path: Path) -> Path:
    _write_images(tmp_path / "train", 3)
    _write_images(tmp_path / "val", 1, seed=1)
    cfg = {
        "scale": 2, "blocks": 1, "growth": 4, "batch": 1, "patch": 16, "iterations": 12, "lr": 1e-3,
        "schedule": "cosine", "warmup": 2, "lr_min": 1e-4, "z_scale": 0.0, "restore_temperature": 0.0,
        "bf16": False, "val_crop": 32,
        "run": {"data": str(tmp_path / "train"), "val": str(tmp_path / "val"), "val_every": 100,
                "ckpt_every": 2, "threads": 1, "publish_dir": str(tmp_path / "published"), "rewarm": 4},
    }
    path = tmp_path / "campaign.yaml"
    path.write_text(OmegaConf.to_yaml(OmegaConf.create(cfg)))
    return path


def _records(path: Path, kind: str) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["kind"] == kind]


def test_a_stopped_campaign_resumes_from_published_weights_on_a_fresh_machine(tiny_campaign, tmp_path, capsys):
    published = tmp_path / "published"
    assert local.main([str(tmp_path / "machine_a"), str(tiny_campaign), "run.stop_after=6"]) == 0
    meta = read_metadata((published / "model.safetensors").read_bytes())
    assert meta["trained_iterations"] == "6"
    weights_at_stop = load_checkpoint(published / "model.safetensors").model.state_dict()

    # another machine: only the published (committed) folder exists
    capsys.readouterr()
    assert local.main([str(tmp_path / "machine_b"), str(tiny_campaign)]) == 0
    assert "start at iteration 6 of 12" in capsys.readouterr().out
    assert read_metadata((published / "model.safetensors").read_bytes())["trained_iterations"] == "12"

    # the schedule continued at iteration 6 (ramped over `rewarm` iterations), not from its warm-up
    cfg = TrainConfig(**{k: v for k, v in OmegaConf.to_container(OmegaConf.load(tiny_campaign)).items()
                         if k != "run"})
    lrs = {r["iteration"]: r["lr"] for r in _records(tmp_path / "machine_b" / "metrics.jsonl", "train")}
    assert set(lrs) == {10}  # train records every 10 iterations; the history of machine A is carried over too
    sched = cfg.lr_schedule()
    assert lrs[10] == pytest.approx(sched.lr_at(9, cfg.iterations))  # iteration 10 is past the 4-step ramp
    assert lrs[10] < cfg.lr  # a restarted schedule would be at its peak here
    history = _records(published / "metrics.jsonl", "val")
    assert [r["iteration"] for r in history] == [6, 12]  # both launches' validations, in one curve
    for name in ("val_curve.png", "metrics.csv"):
        assert (published / name).stat().st_size > 0

    # the second launch trained from the published weights, not from a fresh network
    fresh = build_model(cfg).state_dict()
    resumed = load_checkpoint(published / "model.safetensors").model.state_dict()
    moved_from_stop = sum(float((resumed[k] - weights_at_stop[k]).abs().sum()) for k in resumed)
    moved_from_fresh = sum(float((resumed[k] - fresh[k]).abs().sum()) for k in resumed)
    assert 0 < moved_from_stop < moved_from_fresh


def test_rewarm_ramps_the_scheduled_lr_after_a_resume(tiny_campaign, tmp_path):
    assert local.main([str(tmp_path / "a"), str(tiny_campaign), "run.stop_after=6"]) == 0
    seen = []
    real = local.train_step

    def spy(model, opt, hr, lr_ref, cfg, it, gen, lr_factor=1.0):
        seen.append((it, lr_factor))
        return real(model, opt, hr, lr_ref, cfg, it, gen, lr_factor=lr_factor)

    local.train_step = spy
    try:
        assert local.main([str(tmp_path / "b"), str(tiny_campaign), "run.stop_after=5"]) == 0
    finally:
        local.train_step = real
    assert seen == [(6, 0.25), (7, 0.5), (8, 0.75), (9, 1.0), (10, 1.0)]


def test_a_changed_plan_is_refused_not_resumed(tiny_campaign, tmp_path):
    assert local.main([str(tmp_path / "a"), str(tiny_campaign), "run.stop_after=2"]) == 0
    with pytest.raises(ValueError, match="planned 12 iterations, this config 20"):
        local.main([str(tmp_path / "b"), str(tiny_campaign), "iterations=20"])


@pytest.mark.parametrize("name", ["campaign_x4"])
def test_the_committed_campaign_resumes_where_it_stopped(name, tmp_path):
    """The campaign folder committed in the repository loads into its own config at its iteration."""
    cfg_path = REPO / "configs" / "train" / f"{name}.yaml"
    raw = OmegaConf.load(cfg_path)
    publish_dir = REPO / raw.run.publish_dir
    if not (publish_dir / "model.safetensors").exists():
        pytest.skip(f"{publish_dir} not committed yet")
    raw.pop("run")
    cfg = OmegaConf.to_object(OmegaConf.merge(OmegaConf.structured(TrainConfig), raw))
    model = build_model(cfg)
    start = local.load_published(publish_dir, model, cfg, tmp_path)
    assert 0 < start <= cfg.iterations
    assert (tmp_path / "metrics.jsonl").exists()
    assert cfg.lr_schedule().lr_at(start, cfg.iterations) < cfg.lr
