"""Ingest with a quality floor and LR containers -> restore, through s3fs on moto with a real local Ray.

The tiny weights restore poorly, so every target is set from restores measured in the test itself.
"""
from __future__ import annotations

import io
import math
import re

import numpy as np
import pytest
from PIL import Image

from irn_batch.model.checkpoint import load_checkpoint
from irn_batch.quality_floor import parse_candidate
from irn_batch.storage.manifest import read_manifest
from irn_batch.metrics import psnr_y
from irn_batch.io.decode import decode_image
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.entry import job_main
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.restore import run_restore
from irn_batch.pipeline.verify import verify
from irn_batch.rescale import content_seed, restore_image
from irn_batch.storage import StorageConfig, open_fs

from test_floor import brute_force, thresholds

pytest_plugins = ["pipeline_fixtures"]

CANDS = ["webp:5", "webp:30", "webp:90", "png"]
BUCKET = "floor"


def _jpeg(arr: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _latest(fs, path: str, job_id: str) -> dict[str, dict]:
    fs.invalidate_cache()
    return {r["key"]: r for r in read_manifest(fs, path).to_pylist() if r["job_id"] == job_id}


@pytest.fixture(scope="module")
def floor_run(ray_session, s3_endpoint, calm_ckpt_path):
    """The inputs, a target that the smooth image meets with a lossy candidate and noise cannot, one ingest."""
    from pipeline_fixtures import make_bucket, png_bytes, smooth_image

    fs = make_bucket(s3_endpoint, BUCKET)
    sources = {
        "smooth.png": png_bytes(smooth_image(64, 96, seed=3)),
        "photo.jpg": _jpeg(smooth_image(56, 72, seed=4), 95),
        "noise.png": png_bytes(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)),
        "sub/alpha.png": png_bytes(smooth_image(40, 56, seed=7, channels=4)),
    }
    for key, data in sources.items():
        fs.pipe_file(f"{BUCKET}/in/{key}", data)
    ckpt = load_checkpoint(calm_ckpt_path)
    cands = [parse_candidate(c) for c in CANDS]
    seed = content_seed(sources["smooth.png"])
    smooth_points = brute_force(ckpt, sources["smooth.png"], cands, seed)
    noise_points = [p[2] for p in brute_force(ckpt, sources["noise.png"], cands, content_seed(sources["noise.png"]))]
    noise_best = max(noise_points)
    lossy = [(t, enc) for t, enc in thresholds(smooth_points) if not enc.lossless and t > noise_best]
    assert lossy, f"no target separates a lossy candidate: {smooth_points}, noise {noise_best:.2f} dB"
    target, cheapest = lossy[0]
    common = [f"storage.endpoint_url={s3_endpoint}", f"model={calm_ckpt_path}", "actors.pool_size=2",
              "actors.batch_size=2", f"input=s3://{BUCKET}/in"]
    floor = [f"lr.candidates=[{','.join(CANDS)}]", "floor_precision=fp32"]
    cfg = load_config(IngestConfig, None, [*common, f"output=s3://{BUCKET}/out", *floor, f"target_psnr={target!r}"])
    summary = run_ingest(cfg)
    return dict(fs=fs, sources=sources, ckpt=ckpt, target=target, cheapest=cheapest, noise_points=noise_points,
                common=common, floor=floor, cfg=cfg, summary=summary, endpoint=s3_endpoint)


def test_floor_stores_the_cheapest_lossy_lr_and_keeps_noise_as_it_is(floor_run):
    fs, sources, target, cheapest = (floor_run[k] for k in ("fs", "sources", "target", "cheapest"))
    summary = floor_run["summary"]
    assert (summary["ok"], summary["error"]) == (4, 0) and summary["fell_back"] >= 1
    rows = _latest(fs, f"{BUCKET}/out/_manifest", summary["job_id"])
    assert summary["bytes_in"] == sum(len(v) for v in sources.values())
    assert summary["bytes_out"] == sum(r["lr_bytes"] for r in rows.values())
    assert summary["stored_ratio"] == round(summary["bytes_out"] / summary["bytes_in"], 4)
    smooth = rows["smooth.png"]
    assert (smooth["lr_container"], smooth["lr_quality"], smooth["fell_back"]) == (cheapest.container,
                                                                                  cheapest.quality, False)
    assert smooth["lr_uri"] == f"s3://{BUCKET}/out/smooth{cheapest.suffix}" and smooth["restore_psnr"] >= target
    noise = rows["noise.png"]
    assert noise["fell_back"] and noise["lr_container"] == "original" and math.isinf(noise["restore_psnr"])
    assert noise["lr_uri"] == f"s3://{BUCKET}/out/noise.png" and noise["lr_quality"] is None
    assert fs.cat_file(f"{BUCKET}/out/noise.png") == sources["noise.png"]
    for key, r in rows.items():  # every image: the floor met, or the source kept
        assert r["status"] == "ok" and (r["fell_back"] or r["restore_psnr"] >= target), key
        assert r["fell_back"] == (r["lr_container"] == "original") and r["floor_restores"] >= 0
        assert r["lr_settings"].startswith(f"target_psnr={target:g} ")
        assert fs.cat_file(r["lr_uri"].removeprefix("s3://")) is not None
    assert rows["sub/alpha.png"]["lr_container"] in ("webp", "png", "original")
    assert verify(f"s3://{BUCKET}/out", StorageConfig(endpoint_url=floor_run["endpoint"]),
                  out=io.StringIO())["problems"] == 0


def test_restore_job_meets_the_floor_and_returns_kept_sources_byte_for_byte(floor_run):
    fs, sources, target, ckpt = (floor_run[k] for k in ("fs", "sources", "target", "ckpt"))
    rows = _latest(fs, f"{BUCKET}/out/_manifest", floor_run["summary"]["job_id"])
    out = run_restore(load_config(RestoreConfig, None, [*floor_run["common"][:2], f"input=s3://{BUCKET}/out",
                                                        f"output=s3://{BUCKET}/hr", "format=png"]))
    assert (out["ok"], out["error"]) == (4, 0)
    fs.invalidate_cache()
    for key, r in rows.items():
        if r["fell_back"]:  # the source's own key and bytes
            assert fs.cat_file(f"{BUCKET}/hr/{key}") == sources[key], key
            continue
        hr = fs.cat_file(f"{BUCKET}/hr/{key.rsplit('.', 1)[0]}.png")
        pixels = np.asarray(Image.open(io.BytesIO(hr)))
        assert np.array_equal(pixels, restore_image(ckpt, fs.cat_file(r["lr_uri"].removeprefix("s3://"))))
        original = decode_image(sources[key])
        assert psnr_y(pixels[..., :3], original.rgb, crop=2) >= target, key
    assert verify(f"s3://{BUCKET}/hr", StorageConfig(endpoint_url=floor_run["endpoint"]),
                  out=io.StringIO())["problems"] == 0


def test_rerun_skips_with_the_same_settings_and_redoes_with_another_target(floor_run):
    fs, cfg = floor_run["fs"], floor_run["cfg"]
    again = run_ingest(cfg)
    assert (again["skipped"], again["ok"], again["error"]) == (4, 0, 0)
    receipts = _latest(fs, f"{BUCKET}/out/_manifest", again["job_id"])
    first = _latest(fs, f"{BUCKET}/out/_manifest", floor_run["summary"]["job_id"])
    assert {k: r["lr_uri"] for k, r in receipts.items()} == {k: r["lr_uri"] for k, r in first.items()}
    other = load_config(IngestConfig, None, [*floor_run["common"], f"output=s3://{BUCKET}/out", *floor_run["floor"],
                                             f"target_psnr={floor_run['target'] + 0.001!r}"])
    redone = run_ingest(other)
    assert (redone["ok"], redone["skipped"]) == (4, 0)


def test_fallback_error_names_the_best_psnr(floor_run):
    fs = floor_run["fs"]
    cfg = load_config(IngestConfig, None, [*floor_run["common"], f"output=s3://{BUCKET}/strict", *floor_run["floor"],
                                           f"target_psnr={floor_run['target']!r}", "fallback=error"])
    summary = run_ingest(cfg)
    rows = _latest(fs, f"{BUCKET}/strict/_manifest", summary["job_id"])
    noise = rows["noise.png"]
    assert noise["status"] == "error" and noise["lr_uri"] is None
    assert noise["error"].startswith("floor: no candidate reaches target_psnr")
    # the best restore the search measured: one of the candidates' (the search tries the largest last)
    best = float(re.search(r"best ([0-9.]+) dB \(", noise["error"]).group(1))
    assert best in {round(p, 2) for p in floor_run["noise_points"]} and best < floor_run["target"]
    assert rows["smooth.png"]["status"] == "ok" and not fs.exists(f"{BUCKET}/strict/noise.png")


def test_fixed_container_names_the_key_and_restores(floor_run):
    fs = floor_run["fs"]
    cfg = load_config(IngestConfig, None, [*floor_run["common"], f"output=s3://{BUCKET}/jpeg", "lr.format=jpeg",
                                           "lr.quality=90", "lr.subsampling='4:4:4'"])
    summary = run_ingest(cfg)
    assert (summary["ok"], summary["fell_back"]) == (4, 0)
    rows = _latest(fs, f"{BUCKET}/jpeg/_manifest", summary["job_id"])
    assert rows["photo.jpg"]["lr_uri"] == f"s3://{BUCKET}/jpeg/photo.jpg"
    assert (rows["smooth.png"]["lr_container"], rows["smooth.png"]["lr_quality"],
            rows["smooth.png"]["lr_subsampling"]) == ("jpeg", 90, "4:4:4")
    # JPEG has no alpha: an image with alpha is stored as WebP at the same quality
    assert rows["sub/alpha.png"]["lr_uri"] == f"s3://{BUCKET}/jpeg/sub/alpha.webp"
    assert rows["sub/alpha.png"]["lr_container"] == "webp" and rows["smooth.png"]["restore_psnr"] is None
    restored = run_restore(load_config(RestoreConfig, None, [*floor_run["common"][:2], f"input=s3://{BUCKET}/jpeg",
                                                             f"output=s3://{BUCKET}/jpeg_hr"]))
    assert (restored["ok"], restored["error"]) == (4, 0)


@pytest.mark.parametrize("override, message", [
    ("lr.candidates=[webp:80,webp:abc]", "lr.candidates[1]: 'webp:abc': quality must be an integer"),
    ("target_psnr=0", "target_psnr must be a finite number of dB above 0"),
])
def test_bad_floor_settings_fail_in_one_line(tmp_path, capsys, override, message):
    code = job_main("ingest", tmp_path / "none.yaml", [f"input={tmp_path}", f"output={tmp_path}/o", "target_psnr=30",
                                                       override])
    err = capsys.readouterr().err.strip()
    assert code == 2 and message in err and len(err.splitlines()) == 1


def test_shipped_weights_follow_the_container_and_restore_finds_them_by_model_id(floor_run, tmp_path):
    """No model=: a lossy LR container gets the shipped compression-aware weights where they exist (as in
    the CLI), and the restore job loads whichever shipped weights the ingest manifest records."""
    from irn_batch.model.checkpoint import default_weights_path, read_metadata

    from pipeline_fixtures import png_bytes, smooth_image

    (tmp_path / "in").mkdir()
    (tmp_path / "in" / "a.png").write_bytes(png_bytes(smooth_image(24, 32, seed=11)))
    common = ["scale=4", "actors.pool_size=1", "actors.batch_size=1", f"input={tmp_path / 'in'}"]
    for fmt, lossy in (("webp", True), ("png", False)):
        out = tmp_path / fmt
        run_ingest(load_config(IngestConfig, None, [*common, f"output={out}", f"lr.format={fmt}"]))
        row = read_manifest(*open_fs(str(out / "_manifest"))).to_pylist()[0]
        expected = read_metadata(default_weights_path(4, lossy=lossy).read_bytes())["model_id"]
        assert row["status"] == "ok" and row["model_id"] == expected and row["lr_uri"].endswith(f".{fmt}")
        s = run_restore(load_config(RestoreConfig, None, ["scale=2", f"input={out}", f"output={tmp_path / 'r'}{fmt}",
                                                          "actors.pool_size=1"]))
        assert s["ok"] == 1 and s["model_id"] == expected  # scale=2 is ignored: the manifest's model decides
