"""Camera files: HEIC through pillow-heif, an MPO's extra picture stated, and a.jpg beside a.png (RAW+JPEG
exports, edits beside originals) archived and restored in one job, on the local disk and loopback S3."""
from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from irn_batch.io.decode import decode_image
from irn_batch.storage import key_matcher
from job_setup import Job
from pipeline_fixtures import smooth_image

pytest_plugins = ["pipeline_fixtures"]


def _save(arr: np.ndarray, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format=fmt, **kw)
    return buf.getvalue()


PHONE_EXIF = {0x0110: "Phone 15", 0x013B: "A. Photographer"}  # Model, Artist


def heic(arr: np.ndarray) -> bytes:
    """A HEIC file encoded by pillow-heif itself (libheif + x265), with EXIF as a phone writes it."""
    import pillow_heif

    pillow_heif.register_heif_opener()
    exif = Image.Exif()
    for tag, value in PHONE_EXIF.items():
        exif[tag] = value
    return _save(arr, "HEIF", quality=85, exif=exif.tobytes())


def mpo(first: np.ndarray, second: np.ndarray) -> bytes:
    """A two-picture MPO (a phone's stereo or depth pair), written by Pillow."""
    buf = io.BytesIO()
    Image.fromarray(first).save(buf, format="MPO", save_all=True, append_images=[Image.fromarray(second)], quality=90)
    return buf.getvalue()


def test_heic_and_mpo_decode_and_are_listed_by_default():
    arr = smooth_image(24, 32, seed=4)
    img = decode_image(heic(arr))
    assert (img.container, img.format, img.lossless, img.width, img.height) == ("heif", "HEIF", False, 32, 24)
    assert np.abs(img.rgb * 255 - arr).mean() < 8  # the picture, not noise
    pair = decode_image(mpo(arr, arr[::-1]))
    assert (pair.container, pair.pages, pair.quality) == ("jpeg", 2, 90)
    # a HEIF with two top-level pictures: the primary one is read, the other counted
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="HEIF", save_all=True, append_images=[Image.fromarray(arr[::-1])])
    burst = decode_image(buf.getvalue())
    assert burst.pages == 2 and np.abs(burst.rgb * 255 - arr).mean() < 8
    takes = key_matcher(None)
    assert all(takes(k) for k in ("IMG_0001.HEIC", "x.heif", "y.hif", "z.mpo"))


def _sources() -> dict[str, bytes]:
    return {"phone.heic": heic(smooth_image(40, 48, seed=21)),
            "stereo.mpo": mpo(smooth_image(32, 40, seed=22), smooth_image(32, 40, seed=23)),
            "a.jpg": _save(smooth_image(36, 44, seed=24), "JPEG", quality=92),
            "a.png": _save(smooth_image(36, 44, seed=25), "PNG")}


@pytest.fixture(scope="module", params=["local", "s3"])
def job(request, tmp_path_factory, calm_ckpt_path):
    job = Job(request, tmp_path_factory, "camera", _sources(), calm_ckpt_path)
    job.summary = job.ingest()
    return job


def test_camera_files_are_ingested_not_left_out(job):
    s = job.summary
    assert (s["ok"], s["error"], s["left_out"], s["extra_frames"]) == (4, 0, 0, 1)
    rows = job.rows("lr")
    assert rows["phone.heic"]["source_container"] == "heif"
    # the MPO's second picture is not kept, and its row says how many pictures were left
    assert {k: r["extra_frames"] for k, r in rows.items()} == {"phone.heic": 0, "stereo.mpo": 1, "a.jpg": 0,
                                                                "a.png": 0}
    # a.jpg and a.png: the first in key order keeps the LR stem, the other keeps its suffix in its own
    assert rows["a.jpg"]["lr_uri"] == f"{job.root}/lr/a.png"
    assert rows["a.png"]["lr_uri"] == f"{job.root}/lr/a.png.png"
    again = job.ingest()
    assert (again["ok"], again["skipped"], again["error"]) == (0, 4, 0)


def test_camera_files_restore_in_their_own_containers(job):
    summary = job.restore("hr")
    assert (summary["ok"], summary["error"]) == (4, 0)
    rows = job.rows("hr")
    assert {k: r["out_uri"].rsplit("/", 1)[1] for k, r in rows.items()} == {k: k for k in job.src}
    phone = decode_image(job.cat("hr/phone.heic"))
    assert (phone.container, phone.width, phone.height) == ("heif", 48, 40)
    assert "exif" in rows["phone.heic"]["metadata_kept"].split(",")
    exif = Image.open(io.BytesIO(job.cat("hr/phone.heic"))).getexif()
    assert {tag: exif.get(tag) for tag in PHONE_EXIF} == PHONE_EXIF  # the phone's EXIF, back in its HEIC
    stereo = decode_image(job.cat("hr/stereo.mpo"))  # the primary picture, as a JPEG
    assert (stereo.container, stereo.pages, stereo.quality) == ("jpeg", 1, 90)
    a_jpg, a_png = decode_image(job.cat("hr/a.jpg")), decode_image(job.cat("hr/a.png"))
    assert (a_jpg.container, a_jpg.quality, a_png.container) == ("jpeg", 92, "png")
    # each restore is its own original's picture, not its sibling's
    for key, seed in (("a.jpg", 24), ("a.png", 25)):
        want, other = smooth_image(36, 44, seed=seed), smooth_image(36, 44, seed=49 - seed)
        got = decode_image(job.cat(f"hr/{key}")).rgb * 255
        assert np.abs(got - want).mean() < np.abs(got - other).mean()


def test_a_sibling_added_later_leaves_the_archived_lr_key_alone(job):
    job.put({"b.png": _save(smooth_image(20, 24, seed=26), "PNG")})
    first = job.ingest()
    assert first["ok"] == 1
    job.put({"b.jpg": _save(smooth_image(20, 24, seed=27), "JPEG", quality=80)})  # sorts before b.png
    second = job.ingest()
    assert (second["ok"], second["error"]) == (1, 0)
    rows = job.rows("lr", second["job_id"])
    assert rows["b.png"]["status"] == "skipped" and rows["b.png"]["lr_uri"] == f"{job.root}/lr/b.png"
    assert rows["b.jpg"]["status"] == "ok" and rows["b.jpg"]["lr_uri"] == f"{job.root}/lr/b.jpg.png"


def test_cli_downscale_of_an_mpo_says_the_extra_picture_is_not_kept(tmp_path, capsys, tiny_ckpt_path):
    from irn_batch.cli import main

    src = tmp_path / "pair.mpo"
    src.write_bytes(mpo(smooth_image(16, 20, seed=30), smooth_image(16, 20, seed=31)))
    assert main(["downscale", str(src), "-o", str(tmp_path / "lr.png"), "--model", str(tiny_ckpt_path)]) == 0
    err = capsys.readouterr().err
    assert "note: 1 further picture(s) in the file are not kept" in err
