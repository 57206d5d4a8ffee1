"""The original's container: JPEG quality estimated from its tables, lossless or not, and ``format: source``
(the restore default) writing each restore in its original's container under its original's key."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from irn_batch.io.container import Encoding, source_encoding
from irn_batch.io.decode import decode_image
from irn_batch.io.source_format import describe, jpeg_quality
from job_setup import Job
from pipeline_fixtures import smooth_image

pytest_plugins = ["pipeline_fixtures"]


def _save(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


@pytest.mark.parametrize("quality", [50, 75, 90, 95])
def test_jpeg_quality_is_estimated_from_the_quantisation_tables(quality):
    colour = _save(smooth_image(24, 32, seed=1), "JPEG", quality=quality)
    gray = _save(smooth_image(24, 32, seed=2)[..., 0], "JPEG", quality=quality, subsampling=0)
    for data, subsampling in ((colour, "4:2:0"), (gray, None)):
        img = decode_image(data)
        assert (img.container, img.quality, img.lossless, img.subsampling) == ("jpeg", quality, False, subsampling)


def test_jpeg_quality_edges_and_other_containers():
    assert jpeg_quality(None) is None and jpeg_quality({}) is None and jpeg_quality({0: [1, 2, 3]}) is None
    # all-ones tables: every quality from 98 up gives them (clamped at 1); the highest is reported
    assert jpeg_quality({0: [1] * 64, 1: [1] * 64}) == 100
    for q in (10, 30, 60, 85):  # our own scaled tables come back exactly
        assert decode_image(_save(smooth_image(16, 16, seed=q), "JPEG", quality=q)).quality == q
    arr = smooth_image(16, 20, seed=3)
    cases = {"PNG": ("png", True), "GIF": ("gif", True), "BMP": ("bmp", True), "TIFF": ("tiff", True)}
    for fmt, want in cases.items():
        im = Image.open(io.BytesIO(_save(arr, fmt)))
        assert describe(im, b"")[0::2] == want
    lossless = _save(arr, "WEBP", lossless=True)
    lossy = _save(arr, "WEBP", quality=80)
    assert decode_image(lossless).lossless and not decode_image(lossy).lossless
    jpeg_tiff = _save(arr, "TIFF", compression="jpeg")
    assert not decode_image(jpeg_tiff).lossless
    # what format: source writes for each
    assert source_encoding("jpeg", 90, False) == Encoding("jpeg", 90)
    assert source_encoding("jpeg", 90, False, "4:4:4") == Encoding("jpeg", 90, "4:4:4")
    sub422 = decode_image(_save(arr, "JPEG", subsampling=1))
    assert sub422.subsampling == "4:4:4"  # 4:2:2 is written back as 4:4:4, never with less chroma
    assert source_encoding("webp", None, True) == Encoding("webp", 100)
    assert source_encoding("webp", None, False) == Encoding("webp")
    assert source_encoding("gif", None, True) == Encoding("png") == source_encoding(None, None, None)
    assert source_encoding("heif", None, False).container == "heif"


def _sources() -> dict[str, bytes]:
    photo = smooth_image(48, 64, seed=11)
    return {"photo.jpg": _save(photo, "JPEG", quality=90, subsampling=0),
            "grey.jpeg": _save(photo[..., 1], "JPEG", quality=75),
            "tex.png": _save(smooth_image(40, 40, seed=12), "PNG"),
            "lossless.webp": _save(smooth_image(32, 40, seed=13), "WEBP", lossless=True),
            "lossy.webp": _save(smooth_image(32, 40, seed=14), "WEBP", quality=70),
            "pic.gif": _save(smooth_image(30, 30, seed=15), "GIF")}


@pytest.fixture(scope="module", params=["local", "s3"])
def job(request, tmp_path_factory, calm_ckpt_path):
    job = Job(request, tmp_path_factory, "sourcefmt", _sources(), calm_ckpt_path, "lr.format=webp", "lr.quality=90")
    job.summary = job.ingest()
    return job


def test_ingest_records_the_originals_container(job):
    assert (job.summary["ok"], job.summary["error"]) == (6, 0)
    rows = job.rows("lr")
    got = {k: (r["source_container"], r["source_quality"], r["source_lossless"], r["lossy_from_lossless"])
           for k, r in rows.items()}
    assert {k: r["source_subsampling"] for k, r in rows.items() if r["source_subsampling"]} == {"photo.jpg": "4:4:4"}
    assert got == {"photo.jpg": ("jpeg", 90, False, False), "grey.jpeg": ("jpeg", 75, False, False),
                   "tex.png": ("png", None, True, True), "lossless.webp": ("webp", None, True, True),
                   "lossy.webp": ("webp", None, False, False), "pic.gif": ("gif", None, True, True)}
    # the LRs are WebP (lossy q90): three lossless originals are now stored lossy, and the summary says so
    assert job.summary["lossy_from_lossless"] == 3


def test_format_source_restores_into_the_originals_container_and_key(job):
    summary = job.restore("hr")
    assert (summary["ok"], summary["error"]) == (6, 0)
    rows = job.rows("hr")
    want = {"photo.jpg": "photo.jpg", "grey.jpeg": "grey.jpeg", "tex.png": "tex.png",
            "lossless.webp": "lossless.webp", "lossy.webp": "lossy.webp", "pic.gif": "pic.png"}
    assert {k: r["out_uri"].rsplit("/", 1)[1] for k, r in rows.items()} == want
    out = {k: job.cat(f"hr/{v}") for k, v in want.items()}
    photo = decode_image(out["photo.jpg"])
    assert (photo.container, photo.quality, photo.grey, photo.subsampling) == ("jpeg", 90, False, "4:4:4")
    grey = decode_image(out["grey.jpeg"])
    assert (grey.container, grey.quality, grey.mode) == ("jpeg", 75, "L")
    assert decode_image(out["tex.png"]).container == "png" and decode_image(out["pic.gif"]).container == "png"
    assert decode_image(out["lossless.webp"]).lossless and not decode_image(out["lossy.webp"]).lossless
    assert {k: r["format"] for k, r in rows.items()} == {
        "photo.jpg": "jpeg", "grey.jpeg": "jpeg", "tex.png": "png", "lossless.webp": "webp", "lossy.webp": "webp",
        "pic.gif": "png"}
    # every IRN restore of a lossless original is an approximation of it: the row and the summary say so
    assert {k for k, r in rows.items() if r["lossy_from_lossless"]} == {"tex.png", "lossless.webp", "pic.gif"}
    assert summary["lossy_from_lossless"] == 3
    # the summary compares the restores' bytes with the originals'
    source_bytes = sum(len(v) for v in job.src.values())
    assert {k: r["source_bytes"] for k, r in rows.items()} == {k: len(v) for k, v in job.src.items()}
    assert summary["source_bytes"] == source_bytes
    assert summary["restored_vs_source"] == round(sum(len(v) for v in out.values()) / source_bytes, 4)
    # rerun: intact restores are receipts, not redone
    again = job.restore("hr")
    assert (again["ok"], again["skipped"]) == (0, 6)


def test_a_fixed_format_still_names_its_suffix(job):
    summary = job.restore("png", "format=png", "keys=[photo.jpg,tex.png]")
    assert summary["ok"] == 2
    rows = job.rows("png")
    assert {k: r["out_uri"].rsplit("/", 1)[1] for k, r in rows.items()} == {"photo.jpg": "photo.png",
                                                                              "tex.png": "tex.png"}
