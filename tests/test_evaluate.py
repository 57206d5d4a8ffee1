"""irn-batch evaluate: known answers for the scores, the bicubic baseline, and the whole command."""
from __future__ import annotations

import io
import json
import math

import numpy as np
import pytest
from PIL import Image

from irn_batch.cli import main
from irn_batch.model.checkpoint import load_checkpoint
from irn_batch.evaluation.paper_table import bicubic_restore, evaluate, markdown, score
from irn_batch.metrics import bicubic_lr, psnr_y

Y_GAIN = (65.481 + 128.553 + 24.966) / 255.0  # dY per unit (0..255) change of R = G = B


def _photo(h=48, w=40, seed=0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:h, 0:w]
    base = 128 + 60 * np.sin(x / 5.0 + seed)[..., None] * np.cos(y / 7.0)[..., None] + rng.normal(0, 3, (h, w, 3))
    return np.clip(base, 0, 255).round().astype(np.uint8)


def test_identical_images_give_infinite_psnr_and_unit_ssim():
    a = _photo()
    s = score(a, a.copy(), crop=2)
    assert s["psnr_y"] == math.inf and s["ssim_y"] == pytest.approx(1.0)


def test_constant_offset_gives_the_computed_psnr():
    a = np.clip(_photo(), 20, 230).astype(np.uint8)
    b = a + np.uint8(3)
    expected = 20 * math.log10(255.0 / (3 * Y_GAIN))
    s = score(b, a, crop=2)
    assert s["psnr_y"] == pytest.approx(expected, abs=1e-9)
    assert 0.9 < s["ssim_y"] < 1.0  # a pure shift: luminance term only


def test_gaussian_noise_gives_the_expected_psnr():
    rng = np.random.default_rng(1)
    a = np.full((200, 200, 3), 0.5)
    sigma = 2.0 / 255  # per-channel noise, identical on R, G, B so dY = Y_GAIN * noise
    noisy = a + rng.normal(0, sigma, (200, 200, 1))
    expected = 20 * math.log10(255.0 / (Y_GAIN * 2.0))
    assert score(noisy, a, crop=4)["psnr_y"] == pytest.approx(expected, abs=0.1)


def test_bicubic_restore_keeps_flat_images_and_sizes():
    flat = np.full((33, 47, 3), 0.4, np.float32)
    out = bicubic_restore(flat, 2)
    assert out.shape == (33, 47, 3) and out.dtype == np.uint8
    assert (out == round(0.4 * 255)).all()


def _write(folder, n=2):
    folder.mkdir()
    arrs = []
    for i in range(n):
        arr = _photo(40 + 4 * i, 36, seed=i)
        Image.fromarray(arr).save(folder / f"img{i}.png")
        arrs.append(arr)
    (folder / "zz_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    return arrs


def test_evaluate_scores_every_method_and_skips_a_bad_image(tmp_path, tiny_ckpt_path):
    arrs = _write(tmp_path / "val")
    ckpt = load_checkpoint(tiny_ckpt_path)
    uris = sorted(str(p) for p in (tmp_path / "val").iterdir())
    logs: list[str] = []
    result, grid = evaluate(ckpt, uris, draws=2, grid=1, tile=1 << 30, log=logs.append)
    assert result["n_images"] == 2 and "error" in result["images"][2]
    assert any("zz_broken.png: skipped" in m for m in logs)
    for arr, row in zip(arrs, result["images"]):
        hr = arr.astype(np.float64) / 255
        # Bicubic & Bicubic computed independently of the evaluator: 8-bit bicubic LR, bicubic up, crop = scale
        lr8 = np.round(bicubic_lr(hr, 2) * 255).astype(np.uint8)
        up = np.asarray(Image.fromarray(lr8).resize((lr8.shape[1] * 2, lr8.shape[0] * 2), Image.BICUBIC))
        assert row["bicubic"]["psnr_y"] == pytest.approx(psnr_y(up[: arr.shape[0], : arr.shape[1]], arr, 2), abs=0.05)
        assert set(row) >= {"irn_z", "irn_z0", "bicubic", "lr"}
        assert 0 < row["irn_z"]["ssim_y"] <= 1 and math.isfinite(row["irn_z0"]["psnr_y"])
    for m in ("irn_z", "irn_z0", "bicubic", "lr"):
        assert result["mean"][m]["psnr_y"] == pytest.approx(np.mean([r[m]["psnr_y"] for r in result["images"][:2]]))
    with Image.open(io.BytesIO(grid)) as im:
        assert im.size[0] > 4 * 100  # four panels side by side
    table = markdown(result)
    assert table.count("\n| ") >= 5 and "**mean**" in table and "zz_broken.png | error" in table


def test_cli_evaluate_writes_table_json_and_grid(tmp_path, tiny_ckpt_path, capsys):
    _write(tmp_path / "val", n=1)
    out = tmp_path / "out"
    rc = main(["evaluate", "--model", str(tiny_ckpt_path), "--data", str(tmp_path / "val"), "--out", str(out),
               "--draws", "1"])
    assert rc == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["scale"] == 2 and data["draws"] == 1 and data["n_images"] == 1
    assert (out / "eval.md").read_text().startswith("Model `irn-x2-")
    assert (out / "grid.png").read_bytes().startswith(b"\x89PNG")
    assert "Bicubic & Bicubic" in capsys.readouterr().out


def test_cli_evaluate_errors_are_one_line(tmp_path, tiny_ckpt_path, capsys):
    assert main(["evaluate", "--model", str(tiny_ckpt_path), "--data", str(tmp_path / "nothing")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("irn-batch: error:") and "nothing" in err and "\n" not in err
    assert main(["evaluate", "--model", str(tiny_ckpt_path), "--scale", "4", "--data", str(tmp_path)]) == 2
    assert "--scale 4" in capsys.readouterr().err


pytest_plugins = ["pipeline_fixtures"]


def test_cli_evaluate_reads_images_from_s3(s3_endpoint, tiny_ckpt_path, tmp_path, capsys):
    from pipeline_fixtures import make_bucket, png_bytes

    fs = make_bucket(s3_endpoint, "irn-eval")
    fs.pipe_file("irn-eval/val/a.png", png_bytes(_photo(32, 40, seed=3)))
    out = tmp_path / "s3out"
    rc = main(["evaluate", "--model", str(tiny_ckpt_path), "--data", "s3://irn-eval/val", "--endpoint-url",
               s3_endpoint, "--draws", "1", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "eval.json").read_text())
    assert data["n_images"] == 1 and data["images"][0]["image"] == "s3://irn-eval/val/a.png"
