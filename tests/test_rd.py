"""irn-batch rd: the Bjøntegaard evaluator against known answers, bpp from real encoders, and the command."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from irn_batch.evaluation.bdrate import Curve, bd_psnr_db, bd_rate_pct, psnr_at_rate, rate_at_psnr, select, wins
from irn_batch.model.checkpoint import load_checkpoint
from irn_batch.cli import main
from irn_batch.io.container import Encoding, encode
from irn_batch.evaluation.paper_table import bicubic_restore
from irn_batch.io.colour import to_uint8
from irn_batch.io.decode import decode_image
from irn_batch.metrics import bicubic_lr, psnr_rgb, psnr_y
from irn_batch.evaluation.rd import measure_bicubic, measure_hr, measure_irn
from irn_batch.evaluation.rd_curves import Plan, mean_curves
from irn_batch.rescale import content_seed

RATES = (0.1, 0.2, 0.4, 0.8, 1.6, 3.2)
PSNRS = (27.0, 29.5, 31.6, 33.4, 35.0, 36.3)  # concave in log-rate, like a codec


# --- Bjøntegaard deltas ------------------------------------------------------------------------------


def test_identical_curves_give_zero_deltas():
    c = Curve(RATES, PSNRS)
    assert bd_rate_pct(c, c).value == pytest.approx(0.0, abs=1e-9)
    assert bd_psnr_db(c, c).value == pytest.approx(0.0, abs=1e-9)


def test_a_curve_one_db_higher_gives_bd_psnr_plus_one():
    a, t = Curve(RATES, PSNRS), Curve(RATES, tuple(p + 1.0 for p in PSNRS))
    assert bd_psnr_db(a, t).value == pytest.approx(1.0, abs=1e-9)
    assert bd_psnr_db(t, a).value == pytest.approx(-1.0, abs=1e-9)
    assert bd_rate_pct(a, t).value < 0  # higher at equal rate = fewer bits at equal PSNR


def test_rates_scaled_by_0_8_give_bd_rate_minus_20_percent():
    a, t = Curve(RATES, PSNRS), Curve(tuple(0.8 * r for r in RATES), PSNRS)
    assert bd_rate_pct(a, t).value == pytest.approx(-20.0, abs=1e-9)
    assert bd_rate_pct(t, a).value == pytest.approx(25.0, abs=1e-9)


def test_deltas_are_averaged_over_the_overlap_only():
    # PSNR = 30 + 10 log10(r) on 0.01..10 bpp; the test, 32 + 12 log10(r), is measured on 0.1..1 bpp only.
    # Over the overlap log10(r) in [-1, 0] the mean difference is 2 + 2 * mean(log10 r) = 1 dB exactly.
    ra = tuple(10.0**e for e in np.linspace(-2, 1, 10))
    rt = tuple(10.0**e for e in np.linspace(-1, 0, 5))
    a = Curve(ra, tuple(30 + 10 * math.log10(r) for r in ra), tuple(range(10)))
    t = Curve(rt, tuple(32 + 12 * math.log10(r) for r in rt))
    bd = bd_psnr_db(a, t)
    assert bd.value == pytest.approx(1.0, abs=1e-9)
    assert bd.overlap == pytest.approx((0.1, 1.0))
    # The anchor's points in 0.1..1 bpp (settings 3..6) and its nearest point beyond each end (2 and 7).
    assert bd.points["anchor"] == [2, 3, 4, 5, 6, 7] and bd.points["test"] == [0, 1, 2, 3, 4]


def test_curves_that_do_not_overlap_give_no_number():
    low = Curve(RATES, PSNRS)
    high = Curve(tuple(r * 100 for r in RATES), tuple(p + 20 for p in PSNRS))
    for bd in (bd_rate_pct(low, high), bd_psnr_db(low, high)):
        assert bd.value is None and bd.note == "no overlap"
    assert wins(low, high) == []


def test_too_few_points_are_reported():
    bd = bd_rate_pct(Curve(RATES, PSNRS), Curve(RATES[:3], PSNRS[:3]))
    assert bd.value is None and "too few points" in bd.note


def test_select_keeps_the_overlap_and_one_neighbour_each_side():
    d = np.array([5.0, 1.0, 3.0, 2.0, 4.0, 6.0, 7.0])  # unsorted on purpose
    assert sorted(d[select(d, 3.0, 4.5)].tolist()) == [2.0, 3.0, 4.0, 5.0]
    assert sorted(d[select(d, 0.0, 1.5)].tolist()) == [1.0, 2.0, 3.0, 4.0]  # extended to four points


def test_wins_finds_where_the_test_curve_is_above():
    # anchor 30 + 10 log r, test 31 + 8 log r: the test is above where log10 r < 0.5, r < 3.16 bpp.
    r = tuple(10.0**e for e in np.linspace(-1, 1, 9))
    a = Curve(r, tuple(30 + 10 * math.log10(x) for x in r))
    t = Curve(r, tuple(31 + 8 * math.log10(x) for x in r))
    (lo, hi), = wins(a, t)
    assert lo == pytest.approx(0.1) and hi == pytest.approx(10**0.5, rel=0.03)
    assert rate_at_psnr(a, 35.0) == pytest.approx(10**0.5, rel=1e-9)
    assert psnr_at_rate(t, 1.0) == pytest.approx(31.0, abs=1e-9)
    assert rate_at_psnr(a, 45.0) is None  # outside the measured range: no extrapolation


# --- operating points from real encoders ------------------------------------------------------------


def _photo(h=64, w=56, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(x / 5.0 + seed)[..., None] * np.cos(y / 7.0)[..., None] + rng.normal(0, 4, (h, w, 3))
    return np.clip(base, 0, 255).round().astype(np.uint8)


def _pillow(arr: np.ndarray, **opts) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, **opts)
    return buf.getvalue()


def test_hr_codec_at_a_known_quality_gives_pillows_bytes_and_psnr():
    arr = _photo()
    ref = arr.astype(np.float32) / 255
    plan = Plan(scales=(2, 4), hr_qualities={"jpeg420": (75,), "webp": (60,)}, thumb_quality=85)
    points = measure_hr(ref, plan)
    jpeg = _pillow(arr, format="JPEG", quality=75, subsampling="4:2:0")
    webp = _pillow(arr, format="WEBP", quality=60, method=4)
    thumb = _pillow(to_uint8(bicubic_lr(ref, 4)), format="JPEG", quality=85, subsampling="4:2:0")
    for s in (2, 4):
        for key, data in (("hr jpeg420", jpeg), ("hr webp", webp)):
            (p,) = points[s][key]
            dec = np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))
            assert p["bytes"] == len(data) and p["bpp"] == len(data) * 8 / (64 * 56)
            assert p["psnr_y"] == pytest.approx(psnr_y(dec, arr, s), abs=1e-6)  # float32 k/255 vs uint8
            assert p["psnr_rgb"] == pytest.approx(psnr_rgb(dec, arr, s), abs=1e-6)
        (t,) = points[s]["thumb+hr jpeg420"]
        assert t["bytes"] == len(jpeg) + len(thumb) and t["thumb_bytes"] == len(thumb)
        assert t["psnr_y"] == points[s]["hr jpeg420"][0]["psnr_y"]


def test_bicubic_png_lr_equals_the_evaluate_baseline():
    arr = _photo(50, 46)
    ref = arr.astype(np.float32) / 255
    plan = Plan(scales=(2,), lr_qualities={"jpeg420": (90,)})
    points = measure_bicubic(ref, 2, plan)
    (png,) = points["bicubic png"]
    assert png["psnr_y"] == pytest.approx(psnr_y(bicubic_restore(ref, 2), ref, 2), abs=1e-9)
    assert png["bytes"] == len(encode(to_uint8(bicubic_lr(ref, 2)), Encoding("png")))
    assert png["lr_psnr_y"] > 50  # 8-bit rounding only
    (jpg,) = points["bicubic jpeg420"]
    assert jpg["bytes"] == len(_pillow(to_uint8(bicubic_lr(ref, 2)), format="JPEG", quality=90, subsampling="4:2:0"))


def test_irn_lr_bpp_counts_the_whole_file_the_cli_writes(tmp_path, tiny_ckpt_path):
    arr = _photo()
    src = tmp_path / "hr.png"
    Image.fromarray(arr).save(src)
    lr_path, out_path = tmp_path / "lr.webp", tmp_path / "restored.png"
    assert main(["downscale", str(src), "-o", str(lr_path), "--quality", "80", "--model", str(tiny_ckpt_path)]) == 0
    assert main(["upscale", str(lr_path), "-o", str(out_path), "--model", str(tiny_ckpt_path)]) == 0
    ckpt = load_checkpoint(tiny_ckpt_path)
    img = decode_image(src.read_bytes())
    plan = Plan(scales=(2,), lr_qualities={"webp": (80,)})
    points = measure_irn(img, content_seed(src.read_bytes()), {"lossless": ckpt, "lossy": ckpt}, plan)
    (p,) = points["irn webp"]
    size = lr_path.stat().st_size
    assert p["bytes"] == size and p["bpp"] == size * 8 / (64 * 56)
    plain = encode(to_uint8(decode_image(lr_path.read_bytes()).rgb), Encoding("webp", 80))
    assert size > len(plain)  # the metadata is counted
    restored = np.asarray(Image.open(out_path).convert("RGB"))
    assert p["psnr_y"] == pytest.approx(psnr_y(restored, arr, 2), abs=1e-6)  # float32 k/255 vs uint8
    # Lossless containers hold the same pixels: one restore, the same PSNR, different bytes.
    png, webp_ll = points["irn png"][0], points["irn webp-lossless"][0]
    assert png["psnr_y"] == webp_ll["psnr_y"] and png["bytes"] != webp_ll["bytes"]


def test_mean_curves_average_each_quality_over_images():
    one = {"m": [{"quality": 50, "bpp": 1.0, "bytes": 10, "psnr_y": 30.0, "psnr_rgb": 29.0}]}
    two = {"m": [{"quality": 50, "bpp": 3.0, "bytes": 30, "psnr_y": 34.0, "psnr_rgb": 31.0}]}
    (p,) = mean_curves([one, two])["m"]
    assert p == {"quality": 50, "bpp": 2.0, "bytes": 20.0, "psnr_y": 32.0, "psnr_rgb": 30.0}


# --- the command -------------------------------------------------------------------------------------


def _folder(path: Path, n=2, broken=True) -> Path:
    path.mkdir()
    for i in range(n):
        Image.fromarray(_photo(64 + 8 * i, 56, seed=i)).save(path / f"img{i}.png")
    if broken:
        (path / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return path


def test_rd_command_writes_json_markdown_and_plots_and_skips_a_corrupt_image(
        tmp_path, tiny_ckpt_path, tiny_x4_path, capsys):
    data = _folder(tmp_path / "val")
    out = tmp_path / "rd"
    rc = main(["rd", str(data), "--scale", "2", "4", "--out", str(out), "--model", str(tiny_ckpt_path),
               str(tiny_x4_path), "--qualities", "40", "60", "80", "95", "--hr-qualities", "20", "40", "60", "80", "95",
               "--threads", "1"])
    err = capsys.readouterr().err
    assert rc == 0, err
    assert "zz_broken.png: skipped" in err
    result = json.loads((out / "rd.json").read_text())
    assert result["n_images"] == 2 and result["skipped"][0]["image"].endswith("zz_broken.png")
    for s in ("2", "4"):
        sc = result["scales"][s]
        assert (out / f"rd_x{s}.png").read_bytes().startswith(b"\x89PNG")
        webp = sc["methods"]["irn webp"]["points"]
        assert [p["quality"] for p in webp] == [40, 60, 80, 95]
        per_image = [img["points"][s]["irn webp"][2]["bpp"] for img in result["images"]]
        assert webp[2]["bpp"] == pytest.approx(np.mean(per_image))
        row = next(r for r in sc["bd"] if r["test"] == "irn jpeg420" and r["anchor"] == "hr jpeg420")
        assert row["bd_rate_pct"] is not None or row["note"] == "no overlap"
    md = (out / "rd.md").read_text()
    assert "## x2" in md and "## x4" in md and "zz_broken.png" in md

    # The same x2 measurement in two shards, joined with --merge, gives the same mean curves.
    common = ["--model", str(tiny_ckpt_path), "--qualities", "40", "60", "80", "95",
              "--hr-qualities", "20", "40", "60", "80", "95", "--threads", "1", "--scale", "2"]
    for k in (0, 1):
        assert main(["rd", str(data), "--shard", f"{k}/2", "--out", str(tmp_path / f"part{k}"), *common]) == 0
    parts = [str(tmp_path / f"part{k}" / "rd.json") for k in (0, 1)]
    assert main(["rd", "--merge", *parts, "--out", str(tmp_path / "merged")]) == 0
    merged = json.loads((tmp_path / "merged" / "rd.json").read_text())
    assert merged["n_images"] == 2 and list(merged["scales"]) == ["2"]
    assert merged["scales"]["2"]["methods"] == result["scales"]["2"]["methods"]
    assert merged["scales"]["2"]["bd"] == result["scales"]["2"]["bd"]
    capsys.readouterr()
    assert main(["rd", "--merge", parts[0], parts[0], "--out", str(tmp_path / "dup")]) == 2
    line = _error_line(capsys)
    assert "was measured at x2 by two of the runs" in line


def _error_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert "Traceback" not in err
    return lines[-1]


@pytest.mark.parametrize("case", ["missing", "empty", "all_broken", "scale3", "bad_crop", "bad_shard", "merge_missing"])
def test_rd_bad_input_is_one_clear_line(case, tmp_path, tiny_ckpt_path, capsys):
    out = str(tmp_path / "out")
    if case == "missing":
        argv, expect = ["rd", str(tmp_path / "nope"), "--scale", "2"], "no such file or folder"
    elif case == "empty":
        (tmp_path / "empty").mkdir()
        argv, expect = ["rd", str(tmp_path / "empty"), "--scale", "2"], "no images found"
    elif case == "all_broken":
        data = _folder(tmp_path / "bad", n=0)
        argv, expect = ["rd", str(data), "--scale", "2"], "none of the 1 images could be read"
    elif case == "scale3":
        argv, expect = ["rd", str(tmp_path), "--scale", "3"], "invalid choice: 3"
    elif case == "bad_crop":
        argv, expect = ["rd", str(tmp_path), "--scale", "2", "--crop", "4"], "--crop must be at least 16"
    elif case == "bad_shard":
        argv, expect = ["rd", str(tmp_path), "--scale", "2", "--shard", "2/2"], "--shard K/N needs 0 <= K < N"
    else:
        argv, expect = ["rd", "--merge", str(tmp_path / "none.json")], "none.json: no such file"
    rc = main([*argv, "--out", out, "--model", str(tiny_ckpt_path)])
    line = _error_line(capsys)
    assert rc == 2 and line.startswith("irn-batch: error:") and expect in line


def test_rd_refuses_a_model_of_another_scale(tmp_path, tiny_x4_path, capsys):
    data = _folder(tmp_path / "val", n=1, broken=False)
    rc = main(["rd", str(data), "--scale", "2", "--out", str(tmp_path / "o"), "--model", str(tiny_x4_path)])
    line = _error_line(capsys)
    assert rc == 2 and "model is x4 but --scale is 2" in line and str(tiny_x4_path) in line


def test_smallest_reaching_is_the_cheapest_quality_that_reaches_the_target():
    from irn_batch.evaluation.rd import smallest_reaching
    from irn_batch.evaluation.rd_curves import ENCODINGS

    y, x = np.mgrid[0:48, 0:64].astype(np.float32)
    hr8 = np.clip(np.stack([128 + 90 * np.sin(x / 4 + k) * np.cos(y / 5) for k in range(3)], -1), 0, 255)
    hr8 = hr8.round().astype(np.uint8)
    trials = {}
    for q in range(1, 101):
        data = encode(hr8, ENCODINGS["jpeg420"](q))
        trials[q] = (len(data), psnr_y(decode_image(data).rgb, hr8, 2))
    target = trials[60][1]
    got = smallest_reaching(hr8, "jpeg420", target, crop=2)
    q = got["quality"]
    assert got["psnr_y"] >= target and got["bytes"] == trials[q][0] and q <= 60
    assert q == 1 or trials[q - 1][1] < target  # the quality just below does not reach it
    assert smallest_reaching(hr8, "jpeg420", 200.0, crop=2) is None
