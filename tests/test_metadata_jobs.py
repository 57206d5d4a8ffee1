"""Photo metadata through the CLI (downscale/upscale) and the ingest + restore jobs (local disk and the
loopback S3 server, real Ray): fields compared with what Pillow and exiv2 read of the originals; a tagged
LR restores with a warning, an LR with changed pixels is refused."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from irn_batch.cli import main
from irn_batch.io.container import Encoding
from irn_batch.io.decode import decode_image
from irn_batch.io.lr_file import read_lr, write_lr
from irn_batch.storage.manifest import read_manifest
from irn_batch.pipeline.config import IngestConfig, RestoreConfig
from irn_batch.settings import load_config
from irn_batch.pipeline.ingest import run_ingest
from irn_batch.pipeline.restore import run_restore
from irn_batch.storage import StorageConfig, open_uri
from test_photo_metadata import GPS, assert_carried, element_packet, fields, photo_jpeg, photo_png, retag

pytest_plugins = ["pipeline_fixtures"]


@pytest.fixture(scope="module")
def px():
    from pipeline_fixtures import smooth_image

    return smooth_image(32, 48, seed=3)


def run(capsys, *argv) -> tuple[int, str]:
    rc = main([str(a) for a in argv])
    return rc, capsys.readouterr().err


def test_cli_downscale_upscale_carry_metadata(tmp_path: Path, capsys, tiny_ckpt_path, px):
    src = tmp_path / "photo.jpg"
    src.write_bytes(photo_jpeg(px, orientation=6))
    lr = tmp_path / "photo.webp"
    rc, err = run(capsys, "downscale", src, "-o", lr, "--model", tiny_ckpt_path)
    assert rc == 0 and "metadata: kept exif,xmp,iptc,comment,icc (iptc,comment in" in err, err
    side = json.loads((tmp_path / "photo.webp.meta.json").read_bytes())
    assert sorted(k for k in side if k != "format") == ["comment", "iptc"]
    assert_carried(fields(lr.read_bytes()), {"exif", "xmp", "icc"}, (16, 24))
    out = tmp_path / "back.jpg"
    rc, err = run(capsys, "upscale", lr, "-o", out, "--model", tiny_ckpt_path)
    assert rc == 0, err
    assert_carried(fields(out.read_bytes()), {"exif", "xmp", "iptc", "comment", "icc"}, (32, 48))
    rc, err = run(capsys, "upscale", lr, "-o", tmp_path / "back.webp", "--model", tiny_ckpt_path)
    assert rc == 0 and "webp cannot hold iptc,comment (dropped)" in err, err
    # drop_gps: neither the EXIF GPS IFD nor the XMP exif:GPS* properties survive
    rc, err = run(capsys, "downscale", src, "-o", tmp_path / "nogps.png", "--model", tiny_ckpt_path,
                  "--metadata", "drop_gps")
    assert rc == 0 and "dropped gps" in err, err
    got = fields((tmp_path / "nogps.png").read_bytes())
    assert got["gps"] is None and got["xmp_gps"] is False and got["make"] == "Canon"
    # strip into the LR that had a sidecar: the old sidecar goes, so nothing comes back on upscale
    rc, err = run(capsys, "downscale", src, "-o", lr, "--model", tiny_ckpt_path, "--metadata", "strip")
    assert rc == 0 and not (tmp_path / "photo.webp.meta.json").exists(), err
    rc, err = run(capsys, "upscale", lr, "-o", tmp_path / "stripped.jpg", "--model", tiny_ckpt_path)
    got = fields((tmp_path / "stripped.jpg").read_bytes())
    assert rc == 0 and (got["make"], got["caption"], got["comment"], got["rating"]) == (None,) * 4
    rc, err = run(capsys, "downscale", src, "-o", lr, "--model", tiny_ckpt_path)
    # a tagged LR (exiftool-style packet) still restores; a stripped one is refused naming the file
    meta, _ = read_lr(lr.read_bytes())
    tagged = tmp_path / "tagged.webp"
    tagged.write_bytes(retag(lr.read_bytes(), element_packet(meta)))
    rc, err = run(capsys, "upscale", tagged, "-o", tmp_path / "tagged.png", "--model", tiny_ckpt_path)
    assert rc == 0 and fields((tmp_path / "tagged.png").read_bytes())["rating"] == "5", err
    assert main(["info", str(tagged)]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["z_seed"], info["photo_metadata"]) == (meta.z_seed, ["exif", "xmp", "icc"])
    bare = tmp_path / "bare.webp"
    bare.write_bytes(_stripped(lr.read_bytes()))
    rc, err = run(capsys, "upscale", bare, "-o", tmp_path / "bare.png")
    assert rc == 2 and err.startswith(f"irn-batch: error: {bare}: not an irn_batch LR image (no XMP packet"), err


def _stripped(data: bytes) -> bytes:
    """A WebP with its XMP chunk removed (and the VP8X XMP flag cleared), as `exiftool -all=` leaves it."""
    chunks, i = [], 12
    while i < len(data):
        fourcc, n = data[i:i + 4], int.from_bytes(data[i + 4:i + 8], "little")
        chunk = data[i:i + 8 + n + n % 2]
        if fourcc == b"VP8X":
            chunk = chunk[:8] + bytes([chunk[8] & ~0x04]) + chunk[9:]
        if fourcc != b"XMP ":
            chunks.append(chunk)
        i += 8 + n + n % 2
    riff = b"WEBP" + b"".join(chunks)
    return b"RIFF" + len(riff).to_bytes(4, "little") + riff


# --- jobs ---------------------------------------------------------------------------------------------


def test_job_refuses_an_unknown_metadata_setting(tmp_path: Path, capsys):
    from irn_batch.pipeline.entry import job_main

    rc = job_main("ingest", tmp_path / "none.yaml", [f"input={tmp_path}", f"output={tmp_path}/o", "metadata=some"])
    assert rc == 2
    assert "ingest: error: metadata must be one of keep, drop_gps, strip, got 'some'" in capsys.readouterr().err


@pytest.fixture(scope="module", params=["local", "s3"])
def store(request, tmp_path_factory):
    """(input prefix, output prefix, extra settings, fsspec filesystem) on local disk or the S3 server."""
    if request.param == "local":
        import fsspec

        root = tmp_path_factory.mktemp("mdjobs")
        (root / "in").mkdir()
        return str(root / "in"), str(root / "out"), [], fsspec.filesystem("file"), str(root), StorageConfig()
    from pipeline_fixtures import make_bucket

    endpoint = request.getfixturevalue("s3_endpoint")
    fs = make_bucket(endpoint, "mdjobs")
    return ("s3://mdjobs/in", "s3://mdjobs/out", [f"storage.endpoint_url={endpoint}"], fs, "s3://mdjobs",
            StorageConfig(endpoint_url=endpoint))


@pytest.fixture(scope="module")
def ingested(store, ray_session, tiny_ckpt_path, px):
    inp, out, extra, fs, root, storage = store
    fs.pipe_file(f"{inp}/photo.jpg", photo_jpeg(px, orientation=6))
    fs.pipe_file(f"{inp}/scan.png", photo_png(px))
    common = [f"model={tiny_ckpt_path}", "actors.pool_size=1", "actors.batch_size=2", *extra]
    summary = run_ingest(load_config(IngestConfig, None, [f"input={inp}", f"output={out}", "lr.format=webp",
                                                          *common]))
    fs.invalidate_cache()
    rows = {r["key"]: r for r in read_manifest(*open_uri(out + "/_manifest", storage)).to_pylist()}
    return {"summary": summary, "rows": rows, "common": common, "fs": fs, "inp": inp, "out": out, "root": root,
            "storage": storage}


def _restore(ing, output: str, *over: str):
    return run_restore(load_config(RestoreConfig, None, [f"input={ing['out']}", f"output={output}",
                                                          "format=jpeg", *ing["common"], *over]))


def _open(ing, uri: str):
    return open_uri(uri, ing["storage"])


def _copy_archive(ing, name: str) -> str:
    """Copy the shared ingest output to ``root/name`` (a test that edits LRs edits its own copy); its URI."""
    fs, src = _open(ing, ing["out"])
    copy = f"{ing['root']}/{name}"
    _, dst = _open(ing, copy)
    for path in fs.find(src):
        target = dst + path[len(src):]
        fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(target, fs.cat_file(path))
    fs.invalidate_cache()
    return copy


def _cat(ing, uri: str) -> bytes:
    fs, path = _open(ing, uri)
    fs.invalidate_cache()
    return fs.cat_file(path)


def test_ingest_records_metadata_and_pixel_hash(ingested):
    rows, summary = ingested["rows"], ingested["summary"]
    assert (summary["ok"], summary["error"]) == (2, 0) and summary["metadata_dropped"] == {}
    jpg, png = rows["photo.jpg"], rows["scan.png"]
    assert jpg["metadata_kept"] == "exif,xmp,iptc,comment,icc" and jpg["metadata_dropped"] == ""
    assert png["metadata_kept"] == "exif,xmp,png_text,icc"
    assert jpg["metadata_uri"] == jpg["lr_uri"] + ".meta.json" and len(jpg["lr_pixels_sha256"]) == 64
    from irn_batch.storage import sha256_hex

    side = _cat(ingested, jpg["metadata_uri"])
    assert sha256_hex(side) == jpg["metadata_sha256"]
    assert sorted(k for k in json.loads(side) if k != "format") == ["comment", "iptc"]
    assert_carried(fields(_cat(ingested, jpg["lr_uri"])), {"exif", "xmp", "icc"}, (16, 24))


def test_restore_writes_metadata_back(ingested):
    out = f"{ingested['root']}/restored"
    summary = _restore(ingested, out)
    assert (summary["ok"], summary["error"]) == (2, 0)
    assert summary["metadata_dropped"] == {"png_text": 1}  # a JPEG cannot hold PNG text chunks
    fs, path = _open(ingested, out + "/_manifest")
    rows = {r["key"]: r for r in read_manifest(fs, path).to_pylist()}
    assert rows["photo.jpg"]["metadata_kept"] == "exif,xmp,iptc,comment,icc"
    assert rows["scan.png"]["metadata_dropped"] == "png_text" and rows["photo.jpg"]["warning"] is None
    got = fields(_cat(ingested, rows["photo.jpg"]["out_uri"]))
    assert_carried(got, {"exif", "xmp", "iptc", "comment", "icc"}, (32, 48))  # upright: orientation 6 applied
    got = fields(_cat(ingested, rows["scan.png"]["out_uri"]))
    assert (got["make"], got["rating"], got["gps"]) == ("Canon", "4", GPS)


def test_restore_from_an_lr_prefix_uses_the_sidecar(ingested):
    """Without a manifest the sidecar next to the LR still completes the metadata (unchecked: no sha)."""
    jpg = ingested["rows"]["photo.jpg"]
    fs, _ = _open(ingested, jpg["lr_uri"])
    bare = f"{ingested['root']}/bare"
    for uri in (jpg["lr_uri"], jpg["metadata_uri"]):
        _, path = _open(ingested, f"{bare}/{uri.rsplit('/', 1)[1]}")
        fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
        fs.pipe_file(path, _cat(ingested, uri))
    out = f"{ingested['root']}/restored_bare"
    summary = run_restore(load_config(RestoreConfig, None, [f"input={bare}", f"output={out}", "format=jpeg",
                                                            *ingested["common"]]))
    assert (summary["ok"], summary["error"]) == (1, 0)
    _, path = _open(ingested, out + "/_manifest")
    row = read_manifest(fs, path).to_pylist()[0]
    assert row["metadata_kept"] == "exif,xmp,iptc,comment,icc" and row["warning"] is None
    assert_carried(fields(_cat(ingested, row["out_uri"])), {"exif", "xmp", "iptc", "comment", "icc"}, (32, 48))


def test_tagged_lr_restores_with_warning_and_pixel_edit_is_refused(ingested):
    rows = ingested["rows"]
    copy = _copy_archive(ingested, "tagged_archive")  # the shared archive stays as ingested
    jpg_uri, png_uri = (copy + "/" + rows[k]["lr_uri"].rsplit("/", 1)[1] for k in ("photo.jpg", "scan.png"))
    lr = _cat(ingested, jpg_uri)
    meta, img = read_lr(lr)
    ofs, opath = _open(ingested, jpg_uri)
    ofs.pipe_file(opath, retag(lr, element_packet(meta)))  # exiftool -XMP-xmp:Rating=5, element form
    plr = _cat(ingested, png_uri)
    pmeta, pimg = read_lr(plr)
    changed = (np.asarray(pimg.rgb) * 255).round().astype(np.uint8)
    changed[0, 0] ^= 0x40
    ofs, opath = _open(ingested, png_uri)
    ofs.pipe_file(opath, write_lr(changed, pmeta, Encoding("webp", 100)))
    out = f"{ingested['root']}/restored_tagged"
    summary = run_restore(load_config(RestoreConfig, None, [f"input={copy}", f"output={out}", "format=jpeg",
                                                            *ingested["common"]]))
    assert (summary["ok"], summary["error"], summary["warnings"]) == (1, 1, 1)
    rfs, rpath = _open(ingested, out + "/_manifest")
    rows2 = {r["key"]: r for r in read_manifest(rfs, rpath).to_pylist()}
    ok = rows2["photo.jpg"]
    assert ok["status"] == "ok" and "decoded pixels are unchanged (metadata edited since ingest)" in ok["warning"]
    assert fields(_cat(ingested, ok["out_uri"]))["rating"] == "5"  # the tool's edit travels on
    bad = rows2["scan.png"]
    assert bad["status"] == "error" and "its pixels changed since ingest" in bad["error"]


def test_drop_gps_ingest(ingested, px):
    out = f"{ingested['root']}/nogps"
    summary = run_ingest(load_config(IngestConfig, None, [f"input={ingested['inp']}", f"output={out}",
                                                          "keys=[photo.jpg]", "metadata=drop_gps", "lr.format=png",
                                                          *ingested["common"]]))
    assert summary["ok"] == 1 and summary["metadata_dropped"] == {"gps": 1}
    fs, path = _open(ingested, out + "/_manifest")
    row = read_manifest(fs, path).to_pylist()[0]
    assert row["metadata_dropped"] == "gps" and row["lr_settings"].endswith(" metadata=drop_gps")
    got = fields(_cat(ingested, row["lr_uri"]))
    assert got["gps"] is None and got["xmp_gps"] is False and got["date"] == "2024:05:06 07:08:09"


def test_quality_floor_keeps_metadata(ingested):
    """target_psnr: the chosen candidate carries the metadata; a source kept unchanged has all of it."""
    out = f"{ingested['root']}/floor"
    over = [f"input={ingested['inp']}", "keys=[photo.jpg]", *ingested["common"]]
    summary = run_ingest(load_config(IngestConfig, None, [*over, f"output={out}/a", "target_psnr=1",
                                                          "lr.candidates=[webp:80]"]))
    assert summary["ok"] == 1
    row = read_manifest(*_open(ingested, out + "/a/_manifest")).to_pylist()[0]
    assert row["lr_container"] == "webp" and row["metadata_kept"] == "exif,xmp,iptc,comment,icc"
    assert row["metadata_uri"] == row["lr_uri"] + ".meta.json"
    assert_carried(fields(_cat(ingested, row["lr_uri"])), {"exif", "xmp", "icc"}, (16, 24))
    summary = run_ingest(load_config(IngestConfig, None, [*over, f"output={out}/b", "target_psnr=99",
                                                          "lr.candidates=[webp:80]"]))
    row = read_manifest(*_open(ingested, out + "/b/_manifest")).to_pylist()[0]
    assert row["fell_back"] and row["metadata_kept"] == "exif,xmp,iptc,comment,icc" and row["metadata_uri"] is None
    assert row["lr_pixels_sha256"] and _cat(ingested, row["lr_uri"]) == _cat(ingested, row["source_uri"])


def test_strip_rerun_removes_the_earlier_sidecar(ingested):
    out = f"{ingested['root']}/strip"
    over = [f"input={ingested['inp']}", f"output={out}", "keys=[photo.jpg]", "lr.format=webp", *ingested["common"]]
    assert run_ingest(load_config(IngestConfig, None, over))["ok"] == 1
    fs, path = _open(ingested, f"{out}/photo.webp.meta.json")
    assert fs.exists(path)
    summary = run_ingest(load_config(IngestConfig, None, [*over, "metadata=strip"]))  # other settings: redone
    assert summary["ok"] == 1 and summary["metadata_dropped"] == dict.fromkeys(
        ["comment", "exif", "icc", "iptc", "xmp"], 1)
    fs.invalidate_cache()
    assert not fs.exists(path)
    got = fields(_cat(ingested, f"{out}/photo.webp"))
    assert (got["make"], got["rating"], got["icc"]) == (None, None, None)


def test_a_copied_archive_reads_its_own_sidecars(ingested):
    """Sidecars move with their LRs: a copy's restore plan names the copy's sidecar, never the old one."""
    from irn_batch.pipeline.restore_plan import plan_items

    fs, _ = _open(ingested, ingested["out"])
    copy = _copy_archive(ingested, "archive_copy")
    cfg = load_config(RestoreConfig, None, [f"input={copy}", f"output={ingested['root']}/from_copy",
                                            "format=jpeg", *ingested["common"]])
    items = {r["key"]: r for r in plan_items(cfg, None).items.to_pylist()}
    side = items["photo.jpg"]["metadata_uri"]
    assert side.startswith(copy + "/") and side.endswith(".meta.json")
    assert items["photo.jpg"]["lr_uri"] + ".meta.json" == side
    summary = run_restore(cfg)
    assert (summary["ok"], summary["error"]) == (2, 0)
    _, path = _open(ingested, f"{ingested['root']}/from_copy/_manifest")
    row = {r["key"]: r for r in read_manifest(fs, path).to_pylist()}["photo.jpg"]
    assert row["metadata_kept"] == "exif,xmp,iptc,comment,icc" and row["warning"] is None


def test_a_stripped_lr_restores_from_the_manifest_and_a_stripped_changed_one_is_refused(ingested):
    """`exiftool -all=` on an archived LR: its pixels are the ingest's (pixel hash), so the manifest's record
    stands in for the stripped fields (ok, with a warning); stripped and with changed pixels, it is refused."""
    rows = ingested["rows"]
    copy = _copy_archive(ingested, "stripped_archive")
    jpg_uri, png_uri = (copy + "/" + rows[k]["lr_uri"].rsplit("/", 1)[1] for k in ("photo.jpg", "scan.png"))
    fs, path = _open(ingested, jpg_uri)
    fs.pipe_file(path, _stripped(_cat(ingested, jpg_uri)))
    meta, img = read_lr(_cat(ingested, png_uri))
    changed = (np.asarray(img.rgb) * 255).round().astype(np.uint8)
    changed[0, 0] ^= 0x40
    fs, path = _open(ingested, png_uri)
    fs.pipe_file(path, _stripped(write_lr(changed, meta, Encoding("webp", 100))))
    out = f"{ingested['root']}/restored_stripped"
    summary = run_restore(load_config(RestoreConfig, None, [f"input={copy}", f"output={out}", "format=png",
                                                            *ingested["common"]]))
    assert (summary["ok"], summary["error"]) == (1, 1)
    rfs, rpath = _open(ingested, out + "/_manifest")
    got = {r["key"]: r for r in read_manifest(rfs, rpath).to_pylist()}
    ok = got["photo.jpg"]
    assert ok["status"] == "ok" and "restored from the manifest's record" in ok["warning"], ok
    first = {r["key"]: r for r in read_manifest(*_open(ingested, ingested["out"] + "/_manifest")).to_pylist()}
    assert (ok["width"], ok["height"]) == (first["photo.jpg"]["width"], first["photo.jpg"]["height"])
    # the same image restored from the untouched archive: the stripped LR gives the same pixels
    plain = f"{ingested['root']}/restored_plain"
    run_restore(load_config(RestoreConfig, None, [f"input={ingested['out']}", f"output={plain}", "format=png",
                                                  "keys=[photo.jpg]", *ingested["common"]]))
    want = decode_image(_cat(ingested, plain + "/photo.png")).rgb
    np.testing.assert_array_equal(decode_image(_cat(ingested, ok["out_uri"])).rgb, want)
    bad = got["scan.png"]
    assert bad["status"] == "error" and "its pixels changed since ingest" in bad["error"], bad["error"]
