"""The ingest manifest records what decoding did to the colours (column ``colour``; issue 10, item 6)."""
from __future__ import annotations

import io
import json

import numpy as np
from PIL import Image, ImageCms

from icc_profiles import rgb_profile
from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.config import IngestConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.storage import open_fs

pytest_plugins = ["pipeline_fixtures"]


def _save(im: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_manifest_records_the_colour_conversion(ray_session, tmp_path, tiny_ckpt_path):
    pixels = Image.fromarray(np.random.default_rng(5).integers(0, 256, (20, 24, 3), dtype=np.uint8))
    lab = ImageCms.profileToProfile(pixels, ImageCms.createProfile("sRGB"), ImageCms.createProfile("LAB"),
                                    outputMode="LAB")
    lab.info.pop("icc_profile", None)
    cases = {
        "plain.png": (_save(pixels, "PNG"), "sRGB"),
        "adobe.png": (_save(pixels, "PNG", icc_profile=rgb_profile("Adobe RGB (1998)")),
                      "converted from 'Adobe RGB (1998)' to sRGB (perceptual)"),
        "broken.jpg": (_save(pixels, "JPEG", icc_profile=b"not a profile at all"), "sRGB; ICC profile unusable: "),
        "lab.tif": (_save(lab, "TIFF"), "converted from 'CIELAB D50' to sRGB (perceptual)"),
    }
    (tmp_path / "in").mkdir()
    for name, (data, _) in cases.items():
        (tmp_path / "in" / name).write_bytes(data)
    cfg = load_config(IngestConfig, None, [
        f"input={tmp_path / 'in'}", f"output={tmp_path / 'lr'}", f"keys={json.dumps(sorted(cases))}",
        f"model={tiny_ckpt_path}", "actors.pool_size=1", "actors.batch_size=4",
    ])
    summary = run_ingest(cfg)
    assert (summary["ok"], summary["error"]) == (len(cases), 0)
    fs, path = open_fs(str(tmp_path / "lr" / "_manifest"))
    rows = {r["key"]: r for r in read_manifest(fs, path).to_pylist()}
    for name, (_, colour) in cases.items():
        assert rows[name]["colour"].startswith(colour), (name, rows[name]["colour"])
    assert rows["lab.tif"]["mode"] == "LAB"
