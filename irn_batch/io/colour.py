"""Colour management of decoded samples (ICC profiles, Pillow's ImageCms / littlecms): every decoded value
becomes sRGB, as a colour-managed viewer shows it (the rule is in ``irn_batch.io.decode``'s docstring), and
the gamut clipping of a wide-gamut source is measured. Also the sample helpers both use: gray -> R=G=B and
float -> uint8, and the PIL mode families a profile may describe.
"""
from __future__ import annotations

import functools
import io
from dataclasses import dataclass

import numpy as np
from PIL import Image

from irn_batch.errors import one_line

try:  # Pillow's littlecms binding; wheels always have it, a source build may not
    from PIL import ImageCms
except ImportError:  # pragma: no cover
    ImageCms = None

_GRAY_DEEP = frozenset({"I;16", "I;16B", "I;16L", "I;16N", "I", "F"})
_GRAY = frozenset({"1", "L", "LA", "La"})
_PALETTE = frozenset({"P", "PA"})
_RGB = frozenset({"RGB", "RGBA", "RGBa", "RGBX"})

# How far (levels of 255) a colour may miss its source value after sRGB and back before it counts as clipped.
CLIP_LEVELS = 3
INTENT = "perceptual"


def _gray(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """Float [0, 1] -> uint8 by clipping and rounding x*255 to the nearest integer."""
    return np.round(np.clip(np.asarray(x, dtype=np.float32), 0.0, 1.0) * 255.0).astype(np.uint8)


@functools.lru_cache(maxsize=1)
def _srgb():
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


@functools.lru_cache(maxsize=1)
def srgb_icc() -> bytes:
    """The bytes of ImageCms's built-in sRGB profile: the tag of restores whose values are sRGB.

    littlecms stamps each profile it writes with the time; the stamp (header bytes 24..35) and the profile
    ID that hashes it (bytes 84..99; all zero means "not computed") are zeroed, so restores stay
    byte-for-byte reproducible.
    """
    data = bytearray(_srgb().tobytes())
    data[24:36] = bytes(12)
    data[84:100] = bytes(16)
    return bytes(data)


def _profile_name(profile) -> str:
    name = (profile.profile.profile_description or "").strip()
    name = "".join(c if c.isprintable() else "?" for c in name)[:80]
    return name or "unnamed profile"


# ICC colour space of a profile -> the Pillow mode its transform reads, and the source modes it may describe.
_SPACES = {
    "RGB": ("RGB", _GRAY_DEEP | _GRAY | _PALETTE | _RGB | {"YCbCr", "HSV"}),
    "GRAY": ("L", _GRAY_DEEP | _GRAY),
    "CMYK": ("CMYK", frozenset({"CMYK"})),
    "LAB": ("LAB", frozenset({"LAB"})),
}


@dataclass(frozen=True)
class _Plan:
    transform: object | None  # None: the profile is sRGB already, keep the values
    in_mode: str
    name: str
    inverse: object | None = None  # sRGB -> the source profile (RGB profiles): measures gamut clipping


def _build_plan(profile, mode: str) -> _Plan:
    space = profile.profile.xcolor_space.strip().upper()
    if space not in _SPACES or mode not in _SPACES[space][1]:
        raise ValueError(f"a {space or '?'} profile does not fit a {mode} image")
    in_mode = _SPACES[space][0]
    transform = ImageCms.buildTransform(
        profile, _srgb(), in_mode, "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL, flags=ImageCms.Flags.NOCACHE
    )
    name = _profile_name(profile)
    if in_mode in ("RGB", "L"):  # sRGB already? Then the values stay as they are (16-bit ones too).
        levels = np.linspace(0, 255, 16).round().astype(np.uint8)
        if in_mode == "RGB":
            probe = np.stack(np.meshgrid(levels, levels, levels, indexing="ij"), -1).reshape(64, 64, 3)
            expected = probe
        else:
            probe = np.arange(256, dtype=np.uint8).reshape(16, 16)
            expected = _gray(probe)
        got = np.asarray(ImageCms.applyTransform(Image.fromarray(probe), transform))
        if np.abs(got.astype(int) - expected).max() <= 1:
            return _Plan(None, in_mode, name)
    inverse = None
    if in_mode == "RGB":
        inverse = ImageCms.buildTransform(_srgb(), profile, "RGB", "RGB", renderingIntent=ImageCms.Intent.PERCEPTUAL,
                                          flags=ImageCms.Flags.NOCACHE)
    return _Plan(transform, in_mode, name, inverse)


@functools.lru_cache(maxsize=1)
def _lab_plan() -> _Plan:
    """LAB pixels without a profile: CIE L*a*b* relative to D50, ImageCms's built-in Lab profile."""
    lab = ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB"))
    return _Plan(_build_plan(lab, "LAB").transform, "LAB", "CIELAB D50")


@functools.lru_cache(maxsize=32)
def _plan(icc: bytes, mode: str) -> _Plan:
    """The conversion of ``mode`` pixels described by ICC profile bytes (cached: photos share profiles)."""
    return _build_plan(ImageCms.ImageCmsProfile(io.BytesIO(icc)), mode)


def _clipped(plan: _Plan, src: Image.Image, out: Image.Image) -> float | None:
    """Fraction of pixels whose sRGB value, converted back to the source profile, misses the source
    value by more than CLIP_LEVELS in some channel: colours outside sRGB's gamut (see the docstring)."""
    if plan.inverse is None:
        return None
    back = np.asarray(ImageCms.applyTransform(out, plan.inverse)).astype(np.int16)
    miss = np.abs(back - np.asarray(src).astype(np.int16)).max(axis=2) > CLIP_LEVELS
    return float(miss.mean()) if miss.size else 0.0


def _apply(plan: _Plan, im: Image.Image, rgb: np.ndarray, deep: bool) -> tuple[np.ndarray, str, float | None]:
    if plan.transform is None:
        return rgb, f"sRGB (embedded profile '{plan.name}')", None
    if plan.in_mode in ("CMYK", "LAB"):
        src = im
    elif plan.in_mode == "L":
        src = Image.fromarray(to_uint8(rgb[..., 0]))
    else:
        src = Image.fromarray(to_uint8(rgb))
    converted = ImageCms.applyTransform(src, plan.transform)
    clipped = _clipped(plan, src, converted)
    out = np.asarray(converted).astype(np.float32) / 255.0
    note = f"converted from '{plan.name}' to sRGB ({INTENT}" + (", 8-bit)" if deep else ")")
    return out, note, clipped


def colour_manage(im: Image.Image, rgb: np.ndarray, deep: bool) -> tuple[np.ndarray, str, float | None]:
    """Colour-manage decoded RGB samples into sRGB by the module's rule; (rgb, note, gamut_clipped)."""
    icc = im.info.get("icc_profile")
    problem = ""
    if icc:
        try:
            if ImageCms is None:
                raise RuntimeError("Pillow was built without littlecms")
            return _apply(_plan(bytes(icc), im.mode), im, rgb, deep)
        except MemoryError:
            raise
        except Exception as e:  # an unusable profile never costs the image: fall back to no profile
            problem = f"; ICC profile unusable: {one_line(e, 200)}"
    if im.mode == "LAB" and ImageCms is not None:
        out, note, clipped = _apply(_lab_plan(), im, rgb, deep)
        return out, note + problem, clipped
    if im.mode == "CMYK":
        return rgb, "uncalibrated CMYK conversion (no profile)" + problem, None
    return rgb, "sRGB" + problem, None
