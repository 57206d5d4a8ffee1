"""The quality floor (irn_batch.quality_floor): cheapest candidate against brute force, fallbacks, settings."""
from __future__ import annotations

import io
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from irn_batch.model.checkpoint import load_checkpoint
from irn_batch.io.container import Encoding
from irn_batch.io.lr_file import write_lr
from irn_batch.quality_floor import (BF16_MARGIN_DB, DEFAULT_CANDIDATES, FloorConfigError, FloorError, candidates_for,
                             choose_lr, first_passing, make_policy, parse_candidate)
from irn_batch.io.decode import decode_image
from irn_batch.metrics import psnr_y
from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import load_config
from irn_batch.rescale import downscale_pixels, restore_image

from pipeline_fixtures import png_bytes, smooth_image

SEED = 1234
CANDS = [parse_candidate(s) for s in ("webp:5", "webp:30", "webp:90", "png")]


@pytest.fixture(scope="module")
def calm(calm_ckpt_path):
    return load_checkpoint(calm_ckpt_path)


def brute_force(ckpt, source: bytes, cands, seed: int = SEED) -> list[tuple[Encoding, int, float]]:
    """Every candidate stored and restored independently (restore_image on the stored bytes): (enc, bytes, dB)."""
    img = decode_image(source)
    pixels, meta = downscale_pixels(ckpt, img, z_seed=seed)
    out = []
    for enc in candidates_for(cands, img.alpha is not None):
        data = write_lr(pixels, meta, enc)
        out.append((enc, len(data), psnr_y(restore_image(ckpt, data)[..., :3], img.rgb, crop=2)))
    return out


def thresholds(points: list[tuple[Encoding, int, float]], gap: float = 0.01) -> list[tuple[float, Encoding]]:
    """Targets T whose passing set is exactly the candidates above some byte rank (no restore near T), each
    with the cheapest candidate that reaches it: the cases where 'cheapest' has one right answer."""
    ranked = sorted(points, key=lambda p: p[1])
    out = []
    for k in range(1, len(ranked)):
        low, high = max(p[2] for p in ranked[:k]), min(p[2] for p in ranked[k:])
        if high - low > 2 * gap:
            out.append(((low + high) / 2, ranked[k][0]))
    return out


def test_stored_candidate_reaches_target_and_is_the_cheapest_that_does(calm):
    source = png_bytes(smooth_image(64, 96, seed=3))
    points = brute_force(calm, source, CANDS)
    cases = thresholds(points)
    lossy = [(t, enc) for t, enc in cases if not enc.lossless]
    assert lossy, f"no target separates a lossy candidate: {points}"  # the test needs one to mean anything
    img = decode_image(source)
    for target, cheapest in cases:
        for likely in (None, *CANDS):  # the order of the restores never changes the answer
            prior = None if likely is None else {likely: 50}
            stored = choose_lr(calm, img, source, z_seed=SEED, target_psnr=target, candidates=CANDS, prior=prior)
            assert stored.encoding == cheapest and not stored.fell_back
            # re-measured independently from the stored file, through the restore job's function
            again = psnr_y(restore_image(calm, stored.data)[..., :3], img.rgb, crop=2)
            assert again >= target and again == pytest.approx(stored.restore_psnr, abs=1e-9)
            assert stored.best_psnr >= stored.restore_psnr and stored.restores == len(stored.tried)
            # bisection without a prior; the likely answer confirmed in at most two restores
            assert stored.restores <= (math.ceil(math.log2(len(CANDS) + 1)) if likely is None
                                       else 2 if likely == cheapest else len(CANDS))


def test_noise_falls_back_to_the_source_or_errors_with_the_best_psnr(calm):
    rng = np.random.default_rng(0)
    noise = png_bytes(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8))
    smooth_best = max(p[2] for p in brute_force(calm, png_bytes(smooth_image(48, 64, seed=1)), CANDS))
    points = brute_force(calm, noise, CANDS)
    best = max(p[2] for p in points)
    target = (best + smooth_best) / 2
    assert best < target < smooth_best
    img = decode_image(noise)
    kept = choose_lr(calm, img, noise, z_seed=SEED, target_psnr=target, candidates=CANDS)
    assert kept.fell_back and kept.encoding is None and kept.container == "original"
    assert kept.data == noise and math.isinf(kept.restore_psnr) and "no candidate reaches" in kept.reason
    with pytest.raises(FloorError, match=rf"best {best:.2f} dB \(") as e:
        choose_lr(calm, img, noise, z_seed=SEED, target_psnr=target, candidates=CANDS, fallback="error")
    assert len(str(e.value).splitlines()) == 1 and f"{target:g} dB" in str(e.value)


def test_a_candidate_larger_than_the_source_is_never_stored(calm):
    arr = smooth_image(64, 96, seed=5)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG", quality=40)
    source = buf.getvalue()
    points = brute_force(calm, source, CANDS)
    assert min(p[1] for p in points) < len(source) < max(p[1] for p in points)  # some smaller, some larger
    img = decode_image(source)
    for target in sorted({p[2] for p in points} | {0.5, 99.0}):
        for fallback in ("original", "error"):
            try:
                stored = choose_lr(calm, img, source, z_seed=SEED, target_psnr=target, candidates=CANDS,
                                   fallback=fallback)
            except FloorError:
                # only when every candidate was smaller than the source and none reached the target
                assert all(p[1] < len(source) and p[2] < target for p in points)
                continue
            assert len(stored.data) < len(source) or stored.data == source
    # every candidate larger than the source: the source is kept without a single restore
    tiny = choose_lr(calm, img, source, z_seed=SEED, target_psnr=10.0, fallback="error",
                     candidates=[e for e, n, _ in points if n >= len(source)])
    assert tiny.data == source and tiny.restores == 0 and "smaller than" in tiny.reason


def test_alpha_images_never_get_jpeg(calm):
    source = png_bytes(smooth_image(40, 56, seed=7, channels=4))
    img = decode_image(source)
    cands = [parse_candidate(s) for s in ("jpeg:60", "webp:60", "jpeg:95:4:4:4", "png")]
    assert candidates_for(cands, True) == [Encoding("webp", 60), Encoding("webp", 95), Encoding("png")]
    for target in (1.0, 1000.0):
        stored = choose_lr(calm, img, source, z_seed=SEED, target_psnr=target, candidates=cands)
        assert stored.container != "jpeg"
        assert all(not label.startswith("jpeg") for label, _, _ in stored.tried)


def test_bf16_check_demands_a_margin(calm):
    source = png_bytes(smooth_image(64, 96, seed=3))
    img = decode_image(source)
    target = max(p[2] for p in brute_force(calm, source, CANDS)) - 0.3
    checked = choose_lr(calm, img, source, z_seed=SEED, target_psnr=target, candidates=CANDS, check_precision="bf16")
    assert not checked.fell_back and checked.restore_psnr >= target + BF16_MARGIN_DB
    # the stored file restores (in fp32, as the restore job does) to at least the target
    assert psnr_y(restore_image(calm, checked.data)[..., :3], img.rgb, crop=2) >= target


@settings(max_examples=300, deadline=None)
@given(st.integers(1, 12).flatmap(lambda n: st.tuples(
    st.just(n), st.integers(0, n),
    st.none() | st.lists(st.floats(0.01, 100.0), min_size=n + 1, max_size=n + 1),
    st.integers(0, n))))
def test_first_passing_finds_the_boundary(case):
    n, boundary, weights, likely = case
    probes = []

    def passes(i):
        assert 0 <= i < n and i not in probes
        probes.append(i)
        return i >= boundary

    assert first_passing(n, passes, weights) == boundary
    if weights is None:  # bisection
        assert len(probes) <= math.ceil(math.log2(n + 1))
    probes.clear()
    # nearly all the weight on one answer: that answer is confirmed in at most two probes
    peaked = [1.0] * (n + 1)
    peaked[likely] = 1000.0
    assert first_passing(n, lambda i: passes(i) or False, peaked) == boundary
    if boundary == likely:
        assert len(probes) <= 2


def test_first_passing_needs_one_positive_weight_per_answer():
    with pytest.raises(ValueError, match="need 4 positive weights"):
        first_passing(3, lambda i: True, [1.0, 1.0])
    with pytest.raises(ValueError):
        first_passing(3, lambda i: True, [1.0, 0.0, 1.0, 1.0])


@pytest.mark.parametrize("spec, want", [
    ("webp:80", Encoding("webp", 80)), ("jpeg:90:4:4:4", Encoding("jpeg", 90, "4:4:4")), ("png", Encoding("png")),
    ({"container": "avif", "quality": 70, "subsampling": "4:4:4"}, Encoding("avif", 70, "4:4:4")),
    ("jpg:85", Encoding("jpeg", 85)), ("webp", Encoding("webp")),
])
def test_parse_candidate(spec, want):
    assert parse_candidate(spec) == want


@pytest.mark.parametrize("kwargs, message", [
    (dict(candidates=["webp:80", "gif:3"]), r"lr.candidates\[1\]: 'gif:3': unknown container"),
    (dict(candidates=["webp:abc"]), r"lr.candidates\[0\]: 'webp:abc': quality must be an integer"),
    (dict(candidates=["jpeg:90:4:1:1"]), r"lr.candidates\[0\]: .*subsampling"),
    (dict(candidates=["tiff"]), r"not an LR container"),
    (dict(candidates=[{"container": "webp", "qualty": 3}]), r"unknown keys \['qualty'\]"),
    (dict(candidates=[]), r"non-empty list"),
    (dict(target_psnr=0), r"target_psnr must be a finite number of dB above 0"),
    (dict(check_precision="fp16"), r"floor_precision must be one of fp32, bf16"),
    (dict(target_psnr=-3.0), r"target_psnr must be"),
    (dict(target_psnr=float("nan")), r"target_psnr must be"),
    (dict(fallback="delete"), r"fallback must be one of original, error"),
    (dict(fmt="gif"), r"lr.format/quality/subsampling: unknown container"),
    (dict(fmt="webp", quality=0), r"lr.format/quality/subsampling: quality must be within"),
])
def test_config_errors_are_one_line(kwargs, message):
    kwargs = {"target_psnr": 30.0, **kwargs}
    with pytest.raises(FloorConfigError, match=message) as e:
        make_policy(**kwargs)
    assert len(str(e.value).splitlines()) == 1


def test_policy_settings_and_defaults():
    assert make_policy().settings == "lr=png" and make_policy().target_psnr is None
    assert make_policy("jpeg", 80, "4:4:4").settings == "lr=jpeg 4:4:4 q80"
    floor = make_policy(target_psnr=32, candidates=list(DEFAULT_CANDIDATES))
    assert floor.candidates == tuple(parse_candidate(c) for c in DEFAULT_CANDIDATES)
    assert floor.settings.startswith("target_psnr=32 fallback=original check=fp32 candidates=")
    assert make_policy(target_psnr=32.5).settings != floor.settings  # another target: another setting
    # the job config's defaults (schema and configs/ingest.yaml) are the measured list
    yaml = Path(__file__).resolve().parents[1] / "configs" / "ingest.yaml"
    for cfg in (IngestConfig(), load_config(IngestConfig, yaml, ["input=a", "output=b"])):
        assert list(cfg.lr.candidates) == list(DEFAULT_CANDIDATES) and cfg.target_psnr is None
        assert (cfg.lr.format, cfg.lr.quality, cfg.lr.subsampling, cfg.fallback) == ("png", None, None, "original")
