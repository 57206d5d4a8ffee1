"""One LR file -> the bytes of its restored HR object: the path every restore takes, batch or on demand.

The restore job's actors (:mod:`irn_batch.pipeline.restore`) write what :func:`restore_lr` returns; the
on-demand service returns it. Both thus give the same bytes for the same LR, model, settings and device.
What it does, in order: the LR's checksum against the manifest's (metadata edited since ingest: restored with
a warning; pixels changed: refused), a kept original returned byte for byte, the network's restore with the
recorded z seed, the output array in the container's mode and depth (grey stays grey, 16-bit stays 16-bit
where the container holds it), the photo metadata (the LR's, completed from the ingest's sidecar), encoding.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from typing import Any

from irn_batch.io import photo_metadata as pm
from irn_batch.io.container import Encoding
from irn_batch.model.checkpoint import Checkpoint
from irn_batch.pipeline.read import error_text
from irn_batch.storage import StorageConfig, StorageError, open_uri, sha256_hex


class StageError(Exception):
    """A failure of one stage of a restore (``restore``, ``metadata`` or ``write``); ``error`` is the cause."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage}: {error}")
        self.stage, self.error = stage, error


@dataclass
class HROutput:
    """The restored object's ``data`` and the restore-manifest columns it settles (``fields``)."""

    data: bytes
    fields: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class RestoreOptions:
    """What shapes a restore's bytes besides the LR and the model (the job's ``output_settings`` say it in
    one string). ``encoding`` None: each LR's own (from its item: the original's container)."""

    encoding: Encoding | None
    temperature: float | None
    tile: int | None
    precision: str
    storage: StorageConfig


def restore_lr(ckpt: Checkpoint, rec: dict[str, Any], data: bytes, opts: RestoreOptions) -> HROutput:
    """The HR object for LR bytes ``data`` and its plan item ``rec`` (restore_plan.ITEM_SCHEMA columns).

    Raises StorageError for bytes whose checksum and pixels differ from the manifest's, and StageError
    (naming ``restore`` or ``metadata``) for any other failure.
    """
    t0 = time.perf_counter()
    got = sha256_hex(data)
    warnings = [] if not rec["lr_sha256"] or got == rec["lr_sha256"] else [changed_lr(rec, data, got)]
    fields: dict[str, Any] = {"lr_sha256": got, "lr_bytes": len(data)}
    if rec["fell_back"]:  # the source bytes, kept by ingest: returned unchanged
        fields.update(width=rec["width"], height=rec["height"], format="original", out_bytes=len(data),
                      out_sha256=got, warning="; ".join(warnings) or None,
                      metadata_kept=",".join(pm.extract(data).kinds()), metadata_dropped="", encode_s=0.0)
        return HROutput(data, fields)
    stage = "restore"
    try:
        from irn_batch.io.container import encode, restore_array
        from irn_batch.io.colour import srgb_icc
        from irn_batch.io.decode import GREY_MODES, mode_depth
        from irn_batch.rescale import restore_pixels

        meta, lr = _read_lr(data, rec, ckpt, pixels_checked=bool(warnings), warnings=warnings)
        hr = restore_pixels(ckpt, meta, lr, temperature=opts.temperature, z_seed=rec["z_seed"], tile=opts.tile,
                            precision=opts.precision, as_float=True)
        h, w = hr.shape[:2]
        if rec["width"] is not None and (w, h) != (rec["width"], rec["height"]):
            raise StorageError(f"restored {w}x{h}, manifest says {rec['width']}x{rec['height']}")
        fields.update(width=w, height=h, model_s=time.perf_counter() - t0)
        stage, t1 = "write", time.perf_counter()
        enc = opts.encoding or Encoding(rec["out_container"], rec["out_quality"], rec["out_subsampling"])
        # what the source was: the ingest manifest's columns, else what the LR's metadata implies
        mode = meta.source_mode
        grey = rec["grey"] if rec["grey"] is not None else mode in GREY_MODES
        depth = rec["bit_depth"] or mode_depth(mode)
        pixels, out_depth = restore_array(hr, enc, grey=grey, bit_depth=depth, one_bit=opts.encoding is None)
        icc = note = None
        if pixels.ndim == 3 and pixels.shape[2] >= 3 and (rec["colour"] or "").startswith("converted from"):
            icc, note = srgb_icc(), f"sRGB (the original was {rec['colour']})"
        stage = "metadata"
        photo = pm.for_samples(_photo(rec, data, w, h, warnings, opts.storage), pixels)
        if icc is not None:  # the sRGB profile of pixels converted at ingest
            photo = replace(photo, icc=icc)
        inside, outside = photo.split(enc.container)
        stage = "write"
        out = encode(pixels, enc, photo=photo)
    except Exception as e:
        raise StageError(stage, e) from e
    fields.update(metadata_kept=",".join(inside.kinds()),
                  metadata_dropped=",".join(dict.fromkeys([*outside.kinds(), *photo.dropped])),
                  warning="; ".join(warnings) or None, out_bytes=len(out), out_sha256=sha256_hex(out),
                  format=enc.container, out_bit_depth=out_depth, depth_reduced=depth > 8 and out_depth == 8,
                  out_icc=note, lossy_from_lossless=bool(rec["source_lossless"]),
                  encode_s=time.perf_counter() - t1)
    return HROutput(out, fields)


def _read_lr(data: bytes, rec: dict[str, Any], ckpt: Checkpoint, *, pixels_checked: bool, warnings: list[str]):
    """(LRMeta, DecodedImage) of LR bytes. An LR whose irn_batch fields a photo tool stripped (``exiftool
    -all=``) is read from the ingest manifest's record instead, but only when its decoded pixels were just
    checked against the manifest's pixel hash (``pixels_checked``); a warning says so. Raises ImageError."""
    from irn_batch.io.decode import ImageError, decode_image
    from irn_batch.io.lr_file import LRMeta, read_lr

    try:
        return read_lr(data)
    except ImageError as e:
        if not (pixels_checked and rec.get("model_id") and rec.get("width") and "not an irn_batch LR" in str(e)):
            raise
    img = decode_image(data)
    alpha = img.alpha is not None
    if rec["grey"]:
        mode = "I;16" if (rec["bit_depth"] or 8) > 8 else ("LA" if alpha else "L")
    else:
        mode = "RGBA" if alpha else "RGB"
    meta = LRMeta(rec["model_id"], ckpt.model.scale, rec["width"], rec["height"], int(rec["z_seed"]), alpha, mode)
    if (img.width, img.height) != meta.lr_size:
        raise ImageError(f"LR is {img.width}x{img.height} but the manifest's record needs "
                         f"{meta.lr_size[0]}x{meta.lr_size[1]}")
    warnings.append("its irn_batch metadata was stripped since ingest; restored from the manifest's record")
    return meta, img


def changed_lr(rec: dict[str, Any], data: bytes, got: str) -> str:
    """The warning for LR bytes that differ from the ingest's (their pixels do not); StorageError when the
    pixels differ too, or the manifest has no pixel hash to tell."""
    from irn_batch.io.lr_file import pixels_sha256
    from irn_batch.io.decode import ImageError, decode_image

    mismatch = (f"LR checksum mismatch: manifest has {rec['lr_sha256'][:16]}..., object has {got[:16]}...")
    if not rec.get("lr_pixels_sha256"):
        raise StorageError(f"{mismatch} (modified or corrupt)")
    try:
        pixels = pixels_sha256(decode_image(data))
    except ImageError as e:
        raise StorageError(f"{mismatch} and its pixels cannot be decoded ({e})") from None
    if pixels != rec["lr_pixels_sha256"]:
        raise StorageError(f"{mismatch} and its pixels changed since ingest (pixel sha256 "
                           f"{rec['lr_pixels_sha256'][:16]}... -> {pixels[:16]}...): refused")
    return f"{mismatch}; its decoded pixels are unchanged (metadata edited since ingest): restored"


def _photo(rec: dict[str, Any], data: bytes, width: int, height: int, warnings: list[str],
           storage: StorageConfig) -> pm.PhotoMeta:
    """The photo metadata for the restored image: what the LR holds now, completed from the ingest's sidecar
    (checked against its recorded sha256; from an LR prefix, ``<lr>.meta.json`` where it exists), made to fit
    (width, height) upright. A recorded sidecar that is missing or changed adds a warning and is left out; a
    storage fault reading it raises (the image's error row, redone by a rerun)."""
    from irn_batch.io.lr_file import read_photo_meta

    photo = read_photo_meta(data)
    # an LR prefix (no manifest) may still hold the ingest's sidecars next to the LRs: used when present
    uri, bare = rec.get("metadata_uri"), rec.get("lr_sha256") is None
    if uri is None and bare:
        uri = rec["lr_uri"] + pm.SIDECAR_SUFFIX
    if uri:
        try:
            fs, path = open_uri(uri, storage)
            try:
                side = fs.cat_file(path)
            except FileNotFoundError:
                if bare:  # no sidecar: the LR container held everything
                    return pm.for_image(photo, width, height)
                raise
            if rec.get("metadata_sha256") and sha256_hex(side) != rec["metadata_sha256"]:
                raise ValueError("its sha256 differs from the manifest's")
            photo = photo.filled_from(pm.PhotoMeta.from_json(side))
        except (FileNotFoundError, ValueError) as e:  # gone or changed; a store fault is an error row
            warnings.append(f"metadata sidecar {uri} not used ({error_text(e)})")
    return pm.for_image(photo, width, height)
