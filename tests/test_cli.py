"""The irn-batch command end to end, in process (and once as ``python -m irn_batch``)."""
from __future__ import annotations

import io
import os
import json
import subprocess
import sys
from pathlib import Path

import fsspec
import numpy as np
import pytest
from PIL import Image

from irn_batch.model.checkpoint import default_weights_path
from irn_batch.cli import main


def run(capsys, *argv: str) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("irn-batch: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.fixture
def sample(samples_dir: Path, tmp_path: Path) -> Path:
    """A 61x47 crop of a bundled sample (odd sizes on purpose)."""
    im = Image.open(samples_dir / "chelsea.png").crop((40, 30, 101, 77))
    path = tmp_path / "in.png"
    im.save(path)
    return path


def test_samples_are_small_rgb_pngs(samples_dir):
    files = sorted(samples_dir.glob("*.png"))
    assert len(files) >= 3 and (samples_dir / "LICENSE.md").is_file()
    assert sum(f.stat().st_size for f in files) < 400_000
    for f in files:
        im = Image.open(f)
        assert im.mode == "RGB" and max(im.size) <= 320


def test_downscale_info_upscale_round_trip(capsys, tmp_path, sample, tiny_ckpt_path):
    lr, hr = tmp_path / "lr.png", tmp_path / "out" / "hr.png"
    rc, _, err = run(capsys, "downscale", sample, "-o", lr, "--model", tiny_ckpt_path)
    assert rc == 0, err
    assert Image.open(lr).size == (31, 24)

    rc, out, _ = run(capsys, "info", lr)
    info = json.loads(out)
    assert rc == 0 and info["kind"] == "lr"
    assert (info["width"], info["height"], info["scale"]) == (61, 47, 2)
    assert (info["lr_width"], info["lr_height"]) == (31, 24)
    rc, out, _ = run(capsys, "info", tiny_ckpt_path)
    ck_info = json.loads(out)
    assert ck_info["kind"] == "checkpoint" and ck_info["model_id"] == info["model_id"]
    assert ck_info["config"]["scale"] == 2

    rc, _, err = run(capsys, "upscale", lr, "-o", hr, "--model", tiny_ckpt_path)
    assert rc == 0, err
    first = hr.read_bytes()
    assert Image.open(io.BytesIO(first)).size == (61, 47)
    # Same seed, same model, same device: the same bytes again; another seed gives other pixels.
    assert run(capsys, "upscale", lr, "-o", hr, "--model", tiny_ckpt_path)[0] == 0
    assert hr.read_bytes() == first
    assert run(capsys, "upscale", lr, "-o", hr, "--model", tiny_ckpt_path, "--seed", "123")[0] == 0
    assert hr.read_bytes() != first

    # Tiled (72 is the smallest tile) and whole-image restores agree to a rounding step.
    assert run(capsys, "upscale", lr, "-o", tmp_path / "tiled.png", "--model", tiny_ckpt_path, "--tile", "72")[0] == 0
    tiled = np.asarray(Image.open(tmp_path / "tiled.png")).astype(int)
    assert np.abs(tiled - np.asarray(Image.open(io.BytesIO(first))).astype(int)).max() <= 1

    for suffix, fmt in ((".jpg", "JPEG"), (".webp", "WEBP")):
        out_path = tmp_path / f"hr{suffix}"
        assert run(capsys, "upscale", lr, "-o", out_path, "--model", tiny_ckpt_path, "--quality", "80")[0] == 0
        im = Image.open(out_path)
        assert im.format == fmt and im.size == (61, 47)


def test_fixed_seed_and_fsspec_urls(capsys, sample, tiny_ckpt_path):
    fs = fsspec.filesystem("memory")
    fs.pipe("/cli-test/in.png", sample.read_bytes())
    rc, _, err = run(capsys, "downscale", "memory://cli-test/in.png", "-o", "memory://cli-test/lr.png",
                     "--model", tiny_ckpt_path, "--seed", "42")
    assert rc == 0, err
    rc, out, _ = run(capsys, "info", "memory://cli-test/lr.png")
    assert json.loads(out)["z_seed"] == 42
    rc, _, err = run(capsys, "upscale", "memory://cli-test/lr.png", "-o", "memory://cli-test/hr.png",
                     "--model", tiny_ckpt_path, "--temperature", "0")
    assert rc == 0, err
    assert Image.open(io.BytesIO(fs.cat("/cli-test/hr.png"))).size == (61, 47)


def test_x4_model_and_scale_mismatch(capsys, tmp_path, sample, tiny_x4_path):
    lr = tmp_path / "lr4.png"
    assert run(capsys, "downscale", sample, "-o", lr, "--model", tiny_x4_path, "--scale", "4")[0] == 0
    assert Image.open(lr).size == (16, 12)
    assert run(capsys, "upscale", lr, "-o", tmp_path / "hr.png", "--model", tiny_x4_path)[0] == 0
    assert Image.open(tmp_path / "hr.png").size == (61, 47)
    rc, _, err = run(capsys, "downscale", sample, "-o", lr, "--model", tiny_x4_path, "--scale", "2")
    assert rc == 2 and "x4" in one_error_line(err)


def test_refuses_mismatched_model(capsys, tmp_path, sample, tiny_ckpt_path, other_ckpt_path):
    lr = tmp_path / "lr.png"
    assert run(capsys, "downscale", sample, "-o", lr, "--model", tiny_ckpt_path)[0] == 0
    rc, _, err = run(capsys, "upscale", lr, "-o", tmp_path / "hr.png", "--model", other_ckpt_path)
    line = one_error_line(err)
    assert rc == 2 and str(lr) in line and "made by model" in line
    assert not (tmp_path / "hr.png").exists()


def test_user_mistakes_are_one_line_exit_2(capsys, tmp_path, sample, tiny_ckpt_path):
    lr = tmp_path / "lr.png"
    assert run(capsys, "downscale", sample, "-o", lr, "--model", tiny_ckpt_path)[0] == 0
    data = lr.read_bytes()
    (tmp_path / "cut.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "plain.png").write_bytes(sample.read_bytes())
    (tmp_path / "notes.txt").write_text("not an image\n")
    ckpt = tiny_ckpt_path.read_bytes()
    flipped = bytearray(ckpt)
    flipped[-3] ^= 1
    (tmp_path / "flipped.safetensors").write_bytes(bytes(flipped))
    (tmp_path / "cut.safetensors").write_bytes(ckpt[:1000])
    out = str(tmp_path / "o.png")
    cases = [
        (("upscale", tmp_path / "cut.png", "-o", out, "--model", tiny_ckpt_path), "cut.png"),
        (("upscale", tmp_path / "plain.png", "-o", out, "--model", tiny_ckpt_path), "not an irn_batch LR image"),
        (("upscale", lr, "-o", out, "--model", tmp_path / "flipped.safetensors"), "model id"),
        (("upscale", lr, "-o", out, "--model", tmp_path / "cut.safetensors"), "cut.safetensors"),
        (("upscale", lr, "-o", out, "--model", tmp_path / "nope.safetensors"), "nope.safetensors"),
        (("downscale", tmp_path / "missing.png", "-o", out, "--model", tiny_ckpt_path), "missing.png: no such file"),
        (("downscale", tmp_path / "notes.txt", "-o", out, "--model", tiny_ckpt_path), "not a recognised image"),
        (("downscale", sample, "-o", out, "--model", tiny_ckpt_path, "--max-pixels", "100"), "more than the limit"),
        (("info", tmp_path / "notes.txt"), "neither"),
        (("info", tmp_path / "missing.png"), "no such file"),
        (("upscale", lr, "-o", out, "--model", tiny_ckpt_path, "--quality", "0"), "quality"),
        (("upscale", lr), "required"),
        (("upscale", lr, "-o", out, "--model", tiny_ckpt_path, "--tile", "100"), "--tile"),
        (("downscale", sample, "-o", out, "--model", tiny_ckpt_path, "--tile", "16"), "--tile"),
        (("frobnicate",), "invalid choice"),
    ]
    for argv, reason in cases:
        rc, _, err = run(capsys, *argv)
        assert rc == 2, (argv, err)
        assert reason in one_error_line(err), (reason, err)
    assert not Path(out).exists()


def test_alpha_survives_and_jpeg_output_is_refused(capsys, tmp_path, tiny_ckpt_path):
    rgba = Image.new("RGBA", (21, 14), (200, 100, 50, 128))
    rgba.save(tmp_path / "a.png")
    lr, out = tmp_path / "lr.png", tmp_path / "hr.png"
    assert run(capsys, "downscale", tmp_path / "a.png", "-o", lr, "--model", tiny_ckpt_path)[0] == 0
    assert Image.open(lr).mode == "RGBA"
    assert run(capsys, "upscale", lr, "-o", out, "--model", tiny_ckpt_path)[0] == 0
    restored = Image.open(out)
    assert restored.mode == "RGBA" and restored.size == (21, 14)
    assert abs(int(restored.getpixel((10, 7))[3]) - 128) <= 1  # flat alpha comes back unchanged
    rc, _, err = run(capsys, "upscale", lr, "-o", tmp_path / "hr.jpg", "--model", tiny_ckpt_path)
    assert rc == 2 and "hr.jpg: JPEG cannot store the alpha" in one_error_line(err)


def test_default_weights_or_a_clear_error(capsys, tmp_path, samples_dir):
    """Without --model the bundled weights for the scale are used; with none bundled, one clear line."""
    small = tmp_path / "small.png"
    Image.open(samples_dir / "coffee.png").crop((100, 60, 133, 86)).save(small)
    lr, hr = tmp_path / "lr.png", tmp_path / "hr.png"
    if not default_weights_path(2).is_file():
        rc, _, err = run(capsys, "downscale", small, "-o", lr)
        assert rc == 2 and "--model" in one_error_line(err)
        return
    assert run(capsys, "downscale", small, "-o", lr)[0] == 0
    model_id = json.loads(run(capsys, "info", default_weights_path(2))[1])["model_id"]
    assert json.loads(run(capsys, "info", lr)[1])["model_id"] == model_id
    assert run(capsys, "upscale", lr, "-o", hr)[0] == 0  # the scale (and so the weights) come from the LR
    assert Image.open(hr).size == (33, 26)


def test_external_subcommands_are_wired(capsys):
    for name, module in (("verify", "irn_batch.pipeline.verify"), ("evaluate", "irn_batch.cli.evaluate")):
        try:
            __import__(module)
        except ImportError:
            rc, _, err = run(capsys, name)
            assert rc == 2 and module in one_error_line(err)
            continue
        with pytest.raises(SystemExit) as exc:
            main([name, "--help"])
        assert exc.value.code == 0
        assert name in capsys.readouterr().out


def test_python_dash_m_entry_point(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "irn_batch", "info", str(tmp_path / "missing.png")],
        capture_output=True, text=True, timeout=120,
    )
    assert proc.returncode == 2
    assert one_error_line(proc.stderr).endswith("missing.png: no such file")


@pytest.mark.parametrize("suffix,container", [(".webp", "webp"), (".jpg", "jpeg"), (".jpeg", "jpeg"),
                                              (".avif", "avif"), (".png", "png")])
def test_lr_container_follows_the_output_suffix(capsys, tmp_path, sample, tiny_ckpt_path, suffix, container):
    from irn_batch.io.container import avif_available, container_of

    if container == "avif" and not avif_available():
        pytest.skip("this Pillow has no AVIF")
    lr = tmp_path / f"lr{suffix}"
    extra = [] if container == "png" else ["--quality", "70"]
    assert run(capsys, "downscale", sample, "-o", lr, "--model", tiny_ckpt_path, "--seed", "9", *extra)[0] == 0
    assert container_of(lr.read_bytes()) == container
    info = json.loads(run(capsys, "info", lr)[1])
    assert info["container"] == container and info["z_seed"] == 9 and info["bytes"] == lr.stat().st_size
    assert (info["width"], info["height"]) == (61, 47)
    hr = tmp_path / "hr.png"
    assert run(capsys, "upscale", lr, "-o", hr, "--model", tiny_ckpt_path)[0] == 0
    assert Image.open(hr).size == (61, 47)


@pytest.mark.parametrize("suffix,pil_format", [(".png", "PNG"), (".tif", "TIFF"), (".tiff", "TIFF"),
                                               (".jpg", "JPEG"), (".webp", "WEBP")])
def test_restored_bytes_follow_the_output_suffix(capsys, tmp_path, sample, tiny_ckpt_path, suffix, pil_format):
    lr = tmp_path / "lr.png"
    assert run(capsys, "downscale", sample, "-o", lr, "--model", tiny_ckpt_path)[0] == 0
    out = tmp_path / f"restored{suffix}"
    assert run(capsys, "upscale", lr, "-o", out, "--model", tiny_ckpt_path)[0] == 0
    assert Image.open(out).format == pil_format


def test_unknown_suffixes_and_codec_options_are_refused(capsys, tmp_path, sample, tiny_ckpt_path):
    lr = tmp_path / "lr.png"
    assert run(capsys, "downscale", sample, "-o", lr, "--model", tiny_ckpt_path)[0] == 0
    for argv, reason in (
        (("upscale", lr, "-o", tmp_path / "x.bmp", "--model", tiny_ckpt_path), "x.bmp: cannot tell the container"),
        (("upscale", lr, "-o", tmp_path / "x.gif", "--model", tiny_ckpt_path), "x.gif: cannot tell the container"),
        (("upscale", lr, "-o", tmp_path / "noext", "--model", tiny_ckpt_path), "noext: cannot tell the container"),
        (("downscale", sample, "-o", tmp_path / "lr.tif", "--model", tiny_ckpt_path), "an LR file is one of"),
        (("downscale", sample, "-o", tmp_path / "lr.jpg", "--subsampling", "4:1:1"), "--subsampling"),
        (("downscale", sample, "-o", tmp_path / "lr.webp", "--quality", "abc"), "--quality"),
    ):
        rc, _, err = run(capsys, *argv)
        assert rc == 2 and reason in one_error_line(err), (argv, err)
        assert not (tmp_path / "x.bmp").exists() and not (tmp_path / "lr.tif").exists()


def test_jpeg_lr_of_an_image_with_alpha_is_refused(capsys, tmp_path, tiny_ckpt_path):
    Image.new("RGBA", (12, 10), (1, 2, 3, 100)).save(tmp_path / "a.png")
    rc, _, err = run(capsys, "downscale", tmp_path / "a.png", "-o", tmp_path / "lr.jpg", "--model", tiny_ckpt_path)
    assert rc == 2 and "lr.jpg: JPEG cannot store the alpha" in one_error_line(err)
    assert run(capsys, "downscale", tmp_path / "a.png", "-o", tmp_path / "lr.webp", "--model", tiny_ckpt_path)[0] == 0
    assert Image.open(tmp_path / "lr.webp").mode == "RGBA"


def test_upscale_finds_the_shipped_weights_by_the_recorded_model_id(capsys, tmp_path, samples_dir, tiny_ckpt_path):
    """No --model: the LR's recorded id picks the shipped weights; an id that no shipped file has is refused."""
    from irn_batch.model.checkpoint import weights_dir

    shipped = sorted(weights_dir().glob("irn_x4*.safetensors"))
    if not shipped:
        pytest.skip("no x4 weights shipped")
    small = tmp_path / "small.png"
    Image.open(samples_dir / "coffee.png").crop((100, 60, 140, 92)).save(small)
    lr = tmp_path / "lr.webp"
    assert run(capsys, "downscale", small, "-o", lr, "--model", shipped[0])[0] == 0
    assert run(capsys, "upscale", lr, "-o", tmp_path / "hr.png")[0] == 0  # x4 from the id, not the x2 default
    assert Image.open(tmp_path / "hr.png").size == (40, 32)
    foreign = tmp_path / "foreign.png"
    assert run(capsys, "downscale", small, "-o", foreign, "--model", tiny_ckpt_path)[0] == 0
    model_id = json.loads(run(capsys, "info", foreign)[1])["model_id"]
    rc, _, err = run(capsys, "upscale", foreign, "-o", tmp_path / "x.png")
    line = one_error_line(err)
    assert rc == 2 and model_id in line and "--model" in line


def test_lossy_lr_containers_get_the_compression_aware_weights(capsys, tmp_path, samples_dir):
    """`downscale -o x.webp` (.jpg, .avif) with no --model uses the shipped lossy weights of its scale (x2, x4);
    PNG keeps the plain ones; `upscale` without --model finds either by the LR's recorded model id."""
    from irn_batch.model.checkpoint import default_weights_path, read_metadata
    from irn_batch.io.container import avif_available

    small = tmp_path / "small.png"
    Image.open(samples_dir / "chelsea.png").crop((40, 40, 88, 80)).save(small)
    for scale in (2, 4):
        ids = {lossy: read_metadata(default_weights_path(scale, lossy=lossy).read_bytes())["model_id"]
               for lossy in (True, False)}
        assert ids[True] != ids[False], f"no compression-aware x{scale} weights are shipped"
        for name, lossy in (("lr.webp", True), ("lr.jpg", True), ("lr.avif", True), ("lr.png", False)):
            if name.endswith(".avif") and not avif_available():
                continue
            name = f"x{scale}_{name}"
            assert run(capsys, "downscale", small, "-o", tmp_path / name, "--scale", str(scale))[0] == 0
            assert json.loads(run(capsys, "info", tmp_path / name)[1])["model_id"] == ids[lossy]
            assert run(capsys, "upscale", tmp_path / name, "-o", tmp_path / f"{name}.png")[0] == 0
            assert Image.open(tmp_path / f"{name}.png").size == (48, 40)


def test_output_into_a_closed_pipe_ends_quietly(tmp_path, samples_dir):
    """`irn-batch info x | head -0`: the reader is gone before we write; no traceback, exit 141 (SIGPIPE)."""
    lr = tmp_path / "lr.png"
    assert main(["downscale", str(samples_dir / "coffee.png"), "-o", str(lr)]) == 0
    read_end, write_end = os.pipe()
    os.close(read_end)  # long before the interpreter below starts and writes
    proc = subprocess.run([sys.executable, "-m", "irn_batch", "info", str(lr)], stdout=write_end,
                          stderr=subprocess.PIPE, text=True, timeout=120)
    os.close(write_end)
    assert proc.returncode == 141 and "Traceback" not in proc.stderr, proc.stderr


def test_help_info_and_argument_errors_never_import_torch(tmp_path, capsys, sample, tiny_ckpt_path):
    """What answers at once (issue 19): --help, info of an LR or a checkpoint, and argument errors run
    without torch, which is what made them take 1.5 s or more (benchmarks/bench_cli.py times them)."""
    lr = tmp_path / "lr.webp"
    assert main(["downscale", str(sample), "-o", str(lr), "--model", str(tiny_ckpt_path)]) == 0
    calls = [["--help"], ["downscale", "--help"], ["info", str(lr)], ["info", str(tiny_ckpt_path)],
             ["downscale", str(sample), "-o", str(tmp_path / "x.bmp")], ["upscale", str(lr)],
             ["downscale", str(sample), "-o", str(tmp_path / "y.png"), "--tile", "3"]]
    script = (
        "import sys, json\n"
        "from irn_batch.cli import main\n"
        "codes = []\n"
        f"for argv in {calls!r}:\n"
        "    try:\n"
        "        codes.append(main(argv))\n"
        "    except SystemExit as e:\n"
        "        codes.append(e.code)\n"
        "print(json.dumps({'codes': codes, 'torch': 'torch' in sys.modules}))\n"
    )
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"codes": [0, 0, 0, 0, 2, 2, 2], "torch": False}, out.stderr
