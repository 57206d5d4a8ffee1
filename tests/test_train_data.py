"""Training data: bicubic reference, aligned dihedral patches, cached fsspec loading, config and report files."""
from __future__ import annotations

import io
import json
import os
import time

import numpy as np
import pytest
import torch
from PIL import Image

from irn_batch.metrics import bicubic_resize
from training.config import ConfigError, load_job_config
from training.data import PatchSampler, TrainImage, bicubic_downscale, center_crops
from training.datasource import list_image_uris, load_dataset
from training.report import training_report


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _images(root, n=3, size=(40, 48)):
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrs = []
    for i in range(n):
        a = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
        (root / f"im{i}.png").write_bytes(_png(a))
        arrs.append(a)
    return arrs


def test_bicubic_downscale_is_metrics_bicubic_resize():
    hr = torch.rand(2, 3, 16, 12, generator=torch.Generator().manual_seed(0))
    assert torch.equal(bicubic_downscale(hr, 2), bicubic_resize(hr, (8, 6)))


def test_patches_and_lr_get_the_same_flip_and_transpose():
    rng = torch.Generator().manual_seed(0)
    hr = (torch.rand(3, 16, 16, generator=rng) * 255).to(torch.uint8)
    im = TrainImage(hr, bicubic_downscale(hr[None].float() / 255, 2)[0])
    sampler = PatchSampler([im], patch=16, scale=2, seed=3)  # the patch is the whole image: only the dihedral op varies
    seen = set()
    for _ in range(40):
        p_hr, p_lr = sampler.sample(1)
        # Compose the sampler's ops in the same order (flip W, flip H, transpose) and find the one that fits.
        matches = []
        for fw in (False, True):
            for fh in (False, True):
                for tr in (False, True):
                    a, b = im.hr.float() / 255, im.lr
                    if fw:
                        a, b = a.flip(-1), b.flip(-1)
                    if fh:
                        a, b = a.flip(-2), b.flip(-2)
                    if tr:
                        a, b = a.transpose(-1, -2), b.transpose(-1, -2)
                    if torch.equal(a, p_hr[0]):
                        matches.append((fw, fh, tr, torch.equal(b, p_lr[0])))
        assert matches and all(m[3] for m in matches)
        seen.add(matches[0][:3])
    assert len(seen) >= 6  # the random ops are all used


def test_patch_positions_are_scale_aligned_and_lr_is_the_whole_image_reference():
    hr = (torch.rand(3, 20, 24) * 255).to(torch.uint8)
    im = TrainImage(hr, bicubic_downscale(hr[None].float() / 255, 4)[0])
    sampler = PatchSampler([im], patch=8, scale=4, seed=0)
    sampler.rng = np.random.default_rng(1)
    for _ in range(10):
        p_hr, p_lr = sampler.sample(2)
        assert p_hr.shape == (2, 3, 8, 8) and p_lr.shape == (2, 3, 2, 2)
    with pytest.raises(ValueError):
        PatchSampler([im], patch=10, scale=4)
    with pytest.raises(ValueError):
        PatchSampler([im], patch=32, scale=4)  # no image is that big


def test_center_crops():
    hr = torch.zeros(3, 30, 50, dtype=torch.uint8)
    im = TrainImage(hr, torch.zeros(3, 15, 25))
    (c,) = center_crops([im], 20)
    assert c.hr.shape == (3, 20, 20) and c.lr.shape == (3, 10, 10)


def test_load_dataset_shards_skips_bad_files_and_caches(tmp_path):
    arrs = _images(tmp_path / "data", n=3)
    (tmp_path / "data" / "broken.png").write_bytes(b"\x89PNG not really")
    (tmp_path / "data" / "notes.txt").write_text("ignored")
    assert [u.rsplit("/", 1)[-1] for u in list_image_uris(str(tmp_path / "data"))] == [
        "broken.png", "im0.png", "im1.png", "im2.png"]
    msgs: list[str] = []
    cache = tmp_path / "cache"
    all_ = load_dataset(str(tmp_path / "data"), 2, cache_dir=str(cache), log=msgs.append)
    assert len(all_) == 3 and len(msgs) == 1 and "broken.png" in msgs[0]
    assert torch.equal(all_[0].hr, torch.from_numpy(arrs[0]).permute(2, 0, 1))
    assert len(list(cache.glob("*.npy"))) == 3
    # shards: every world-th file, disjoint
    s0 = load_dataset(str(tmp_path / "data"), 2, shard=(0, 2), cache_dir=str(cache), log=msgs.append)
    s1 = load_dataset(str(tmp_path / "data"), 2, shard=(1, 2), cache_dir=str(cache), log=msgs.append)
    assert len(s0) + len(s1) == 3
    # the cache is used: a cached entry is read instead of the file while the file's version is unchanged
    entry = sorted(cache.glob("*.npy"))
    for e in entry:
        np.save(e, np.full((4, 4, 3), 7, np.uint8))
    again = load_dataset(str(tmp_path / "data"), 2, cache_dir=str(cache), log=msgs.append)
    assert all(int(im.hr.float().mean()) == 7 for im in again)
    # ... and a changed file (new size/mtime) gets a new entry, not the stale one
    p = tmp_path / "data" / "im0.png"
    p.write_bytes(_png(np.zeros((8, 8, 3), np.uint8)))
    os.utime(p, (time.time() + 5, time.time() + 5))
    fresh = load_dataset(str(tmp_path / "data"), 2, cache_dir=str(cache), log=msgs.append)
    assert fresh[0].hr.shape == (3, 8, 8) and int(fresh[0].hr.float().max()) == 0


def test_load_dataset_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_dataset(str(tmp_path / "missing"), 2)
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError):
        load_dataset(str(tmp_path / "empty"), 2)


def test_job_config_rejects_typos_and_bad_values(tmp_path):
    job = load_job_config("configs/train/irn_x4.yaml", ["train.iterations=10", "ray.num_workers=4"])
    assert (job.train.scale, job.train.batch, job.train.patch, job.train.iterations) == (4, 16, 144, 10)
    paper = load_job_config("configs/train/irn_x8.yaml")
    assert (paper.train.iterations, paper.train.schedule, paper.train.z_scale) == (500_000, "multistep", 1.0)
    bad_overrides = ["train.iteratons=3", "trian.batch=2", "train.batch=abc", "ray.num_workers=3", "train.patch=15"]
    for bad in ([b] for b in bad_overrides):
        with pytest.raises(ConfigError):
            load_job_config("configs/train/irn_x2.yaml", bad)
    with pytest.raises(ConfigError):
        load_job_config(tmp_path / "nope.yaml")


def test_training_report_files():
    history = [{"kind": "train", "iteration": i, "loss": 10.0 / i} for i in range(1, 6)]
    history += [{"kind": "val", "iteration": 5, "psnr_y": 30.0, "bicubic_psnr_y": 29.0, "lr_psnr_y": 40.0}]
    files = training_report(history)
    csv_lines = files["metrics.csv"].decode().splitlines()
    assert csv_lines[0].startswith("kind,iteration,loss") and len(csv_lines) == 7
    summary = json.loads(files["metrics.json"])["summary"]
    assert summary["best_psnr_y"] == 30.0 and summary["iterations"] == 5
    for name in ("val_curve.png", "loss_curve.png"):
        with Image.open(io.BytesIO(files[name])) as im:
            assert im.format == "PNG" and im.size == (800, 480)
            # something was drawn in colour (the curve), not just black text on white
            rgb = np.asarray(im.convert("RGB")).astype(int)
            assert (rgb[..., 0] != rgb[..., 1]).any()
