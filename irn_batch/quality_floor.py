"""The quality floor: choose how to store one image so that its restore reaches a target Y-PSNR.

``choose_lr`` runs the network once (``rescale.downscale_pixels``), encodes the LR in every candidate
container (cheap next to a restore), drops any candidate not smaller than the source file, orders the rest
by their actual bytes, and restores candidates through ``rescale.restore_pixels`` — the restore job's own
code path, at the checkpoint's default temperature and the recorded z seed — until it has found the
cheapest one whose restore reaches the target. Y-PSNR follows the IRN paper's protocol
(``metrics.psnr_y``, BT.601 Y, ``crop`` = scale border pixels, less for images too small for it) against
the decoded original (``io.decode.decode_image``). A restore job with the same ``tile`` and precision
(both default) gives exactly the measured pixels; other tile sizes differ by a rounding step.

Search: restored PSNR is assumed to rise with the bytes of the candidates (true of one codec over its
quality range; the default candidates were measured to keep it on the validation photos), so the answer is
a boundary in the byte-ordered list, found by probes. ``prior`` (the pipeline passes how often each
candidate was chosen for the images before) shapes the probe order: the search tree with the fewest
expected restores for those frequencies (plus one each), so the likeliest candidates are tried first;
without a prior it is bisection (log2(n + 1) restores, rounded up). Whatever the order, the stored
candidate's restore was measured to reach the target.

When no candidate reaches the target the source bytes are kept unchanged (``fallback="original"``;
restore then returns them byte for byte) or ``FloorError`` names the best PSNR reached
(``fallback="error"``). When candidates were dropped for being no smaller than the source, the source is
kept in either case: it is cheaper than any of them and restores exactly.

Alpha rule: JPEG has no alpha channel, so for an image with alpha every JPEG candidate becomes WebP at the
same quality (``Encoding.for_alpha``; duplicates are tried once). The floor measures the RGB planes only;
alpha travels bicubically as in every LR.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping, Sequence

from irn_batch.model.checkpoint import Checkpoint
from irn_batch.io.container import LR_CONTAINERS, ContainerError, Encoding, avif_available
from irn_batch.io.lr_file import LRMeta, read_lr, write_lr
from irn_batch.io.decode import DecodedImage
from irn_batch.metrics import psnr_y
from irn_batch.io.photo_metadata import PhotoMeta
from irn_batch.rescale import PRECISIONS, downscale_pixels, restore_pixels

FALLBACKS = ("original", "error")
# A check run in bf16 demands this much more than the target, so that the fp32 restore still reaches it:
# bf16 restores came out 0.0006 to 0.051 dB below fp32 on the validation photos (x2, 512^2 crops;
# docs/results/floor_candidates.md). That is above the 0.05 dB a check may cost, so the check runs in
# fp32 unless floor_precision=bf16 asks otherwise.
BF16_MARGIN_DB = 0.1
ORIGINAL = "original"  # the container name recorded when the source bytes are stored unchanged

# Smallest first. Measured with the shipped x2 weights on the 11 validation photos (512^2 crops,
# docs/results/floor_candidates.md): AVIF 4:4:4 gives the smallest LR for a given restore Y-PSNR at every
# quality measured (the LR carries detail in its chroma, which 4:2:0 WebP, JPEG and AVIF throw away: WebP q95
# restores 4 dB below AVIF 4:4:4 q95 at 0.6 times its bytes), its bytes and PSNR rise in this order on every
# photo, and WebP lossless restores exactly as PNG does from 12% fewer bytes.
DEFAULT_CANDIDATES = ("avif:60:4:4:4", "avif:75:4:4:4", "avif:85:4:4:4", "avif:90:4:4:4", "avif:95:4:4:4",
                      "avif:98:4:4:4", "webp:100")


class FloorConfigError(ValueError):
    """A floor setting that cannot work (bad candidate, target_psnr <= 0, unknown fallback); one line."""


class FloorError(ValueError):
    """No candidate's restore reaches the target and ``fallback="error"``; the message names the best PSNR."""


def parse_candidate(spec: Any) -> Encoding:
    """'container[:quality[:subsampling]]' (e.g. 'webp:80', 'jpeg:90:4:4:4', 'png') or a dict with
    ``container``/``format``, ``quality``, ``subsampling`` -> Encoding. Raises FloorConfigError."""
    if isinstance(spec, Encoding):
        return spec
    if isinstance(spec, str):
        parts = spec.strip().split(":", 2)
        container, quality, sub = parts[0], parts[1] if len(parts) > 1 else None, parts[2] if len(parts) > 2 else None
    elif isinstance(spec, dict):
        unknown = set(spec) - {"container", "format", "quality", "subsampling"}
        if unknown:
            raise FloorConfigError(f"{spec!r}: unknown keys {sorted(unknown)} (container, quality, subsampling)")
        container, quality = spec.get("container", spec.get("format")), spec.get("quality")
        sub = spec.get("subsampling")
    else:
        raise FloorConfigError(f"{spec!r}: expected 'container:quality[:subsampling]' or a dict")
    if not container:
        raise FloorConfigError(f"{spec!r}: no container")
    try:
        q = None if quality in (None, "") else int(quality)
    except (TypeError, ValueError):
        raise FloorConfigError(f"{spec!r}: quality must be an integer 1..100, got {quality!r}") from None
    try:
        enc = Encoding(str(container), q, sub or None)
    except ContainerError as e:
        raise FloorConfigError(f"{spec!r}: {e}") from None
    if enc.container not in LR_CONTAINERS:
        raise FloorConfigError(f"{spec!r}: {enc.container} is not an LR container (one of {', '.join(LR_CONTAINERS)})")
    if enc.container == "avif" and not avif_available():
        raise FloorConfigError(f"{spec!r}: this Pillow was built without AVIF support (pip install -U pillow, "
                               "or list no avif candidates)")
    return enc


@dataclass(frozen=True)
class StoragePolicy:
    """How ingest stores LRs: one fixed encoding, or the floor (``target_psnr`` dB over ``candidates``)."""

    fixed: Encoding = Encoding()
    target_psnr: float | None = None
    candidates: tuple[Encoding, ...] = ()
    fallback: str = "original"
    check_precision: str = "fp32"  # the check restores' precision (bf16 demands BF16_MARGIN_DB more)

    @property
    def settings(self) -> str:
        """Everything that shapes the stored bytes besides model and source, as one comparable string
        (recorded per manifest row; an ingest rerun with other settings redoes the image)."""
        if self.target_psnr is None:
            return f"lr={self.fixed.label}"
        return (f"target_psnr={self.target_psnr:g} fallback={self.fallback} check={self.check_precision} "
                f"candidates={','.join(c.label for c in self.candidates)}")


def make_policy(fmt: str = "png", quality: int | None = None, subsampling: str | None = None,
                candidates: Sequence[Any] = DEFAULT_CANDIDATES, target_psnr: float | None = None,
                fallback: str = "original", check_precision: str = "fp32") -> StoragePolicy:
    """Validate ingest's ``lr.*``, ``target_psnr``, ``fallback`` and ``floor_precision`` settings;
    FloorConfigError (one line) if bad."""
    try:
        fixed = Encoding(fmt, quality, subsampling)
    except ContainerError as e:
        hint = " (YAML reads an unquoted 4:4:4 as a number: quote it, lr.subsampling='4:4:4')" \
            if str(subsampling).isdigit() else ""
        raise FloorConfigError(f"lr.format/quality/subsampling: {e}{hint}") from None
    if fixed.container not in LR_CONTAINERS:
        raise FloorConfigError(f"lr.format: {fixed.container} is not an LR container "
                               f"(one of {', '.join(LR_CONTAINERS)})")
    if fallback not in FALLBACKS:
        raise FloorConfigError(f"fallback must be one of {', '.join(FALLBACKS)}, got {fallback!r}")
    if check_precision not in PRECISIONS:
        raise FloorConfigError(f"floor_precision must be one of {', '.join(PRECISIONS)}, got {check_precision!r}")
    if target_psnr is None:
        return StoragePolicy(fixed=fixed, fallback=fallback)
    try:
        t = float(target_psnr)
    except (TypeError, ValueError):
        raise FloorConfigError(f"target_psnr must be a number of dB, got {target_psnr!r}") from None
    if not math.isfinite(t) or t <= 0:
        raise FloorConfigError(f"target_psnr must be a finite number of dB above 0, got {target_psnr!r}")
    if isinstance(candidates, (str, bytes)) or not candidates:
        raise FloorConfigError("lr.candidates must be a non-empty list such as ['webp:80', 'png']")
    encs = []
    for i, spec in enumerate(candidates):
        try:
            encs.append(parse_candidate(spec))
        except FloorConfigError as e:
            raise FloorConfigError(f"lr.candidates[{i}]: {e}") from None
    return StoragePolicy(fixed=fixed, target_psnr=t, candidates=tuple(dict.fromkeys(encs)), fallback=fallback,
                         check_precision=check_precision)


@dataclass
class StoredLR:
    """What ``choose_lr`` decided to store for one image.

    ``data``: the bytes to store (an LR file, or the source unchanged when ``encoding`` is None).
    ``restore_psnr``: Y-PSNR (dB) of what the restore job returns from ``data`` (inf for the source kept).
    ``best_psnr``: the best candidate restore measured (None when none was restored).
    ``restores``: network restores the check ran. ``reason``: why the source was kept, else ''.
    """

    data: bytes
    encoding: Encoding | None
    meta: LRMeta
    restore_psnr: float
    best_psnr: float | None
    restores: int
    reason: str = ""
    tried: list[tuple[str, int, float]] = field(default_factory=list)  # (label, bytes, dB) in restore order

    @property
    def fell_back(self) -> bool:
        return self.encoding is None

    @property
    def container(self) -> str:
        return ORIGINAL if self.encoding is None else self.encoding.container


def candidates_for(candidates: Iterable[Encoding], has_alpha: bool) -> list[Encoding]:
    """The candidates an image can use: JPEG becomes WebP at the same quality for alpha; each tried once."""
    return list(dict.fromkeys(c.for_alpha(has_alpha) for c in candidates))


def psnr_crop(scale: int, width: int, height: int) -> int:
    """The paper's border crop (``scale``), less for an image too small to keep any pixel after it."""
    return max(0, min(scale, (min(width, height) - 1) // 2))


def first_passing(n: int, passes, weights: Sequence[float] | None = None) -> int:
    """Smallest i in [0, n) with ``passes(i)``, assuming passes is monotone (False...False True...True);
    n when none does.

    ``weights``: n + 1 positive likelihoods of the answers 0..n (default: equal, which gives bisection). The
    probes follow the binary search tree with the least expected number of probes for them (Knuth's
    optimal alphabetic tree by dynamic programming; O(n^3), n is a handful of candidates).
    """
    w = [1.0] * (n + 1) if weights is None else [float(x) for x in weights]
    if len(w) != n + 1 or min(w) <= 0:
        raise ValueError(f"need {n + 1} positive weights, got {weights!r}")
    acc = [0.0]
    for x in w:
        acc.append(acc[-1] + x)
    # cost[lo][hi]: least expected probes (times the weight) when the answer lies in lo..hi
    cost = [[0.0] * (n + 1) for _ in range(n + 1)]
    root = [[0] * (n + 1) for _ in range(n + 1)]
    for size in range(1, n + 1):
        for lo in range(0, n + 1 - size):
            hi = lo + size
            # probe i: a pass leaves lo..i, a failure i+1..hi; ties go to the middle
            best = min(range(lo, hi), key=lambda i: (cost[lo][i] + cost[i + 1][hi], abs(2 * i + 1 - lo - hi)))
            cost[lo][hi] = acc[hi + 1] - acc[lo] + cost[lo][best] + cost[best + 1][hi]
            root[lo][hi] = best
    lo, hi = 0, n
    while lo < hi:
        i = root[lo][hi]
        if passes(i):
            hi = i
        else:
            lo = i + 1
    return lo


def choose_lr(
    ckpt: Checkpoint,
    img: DecodedImage,
    source_bytes: bytes,
    *,
    z_seed: int,
    target_psnr: float,
    candidates: Sequence[Encoding],
    fallback: str = "original",
    tile: int | None = None,
    precision: str = "fp32",
    check_precision: str | None = None,
    prior: Mapping[Encoding | None, float] | None = None,
    photo: PhotoMeta | None = None,
) -> StoredLR:
    """Store one image as the cheapest candidate whose restore reaches ``target_psnr`` (Y-PSNR, dB).

    ``img`` is ``source_bytes`` decoded; ``candidates`` are LR encodings, nominally smallest first (the
    actual order is by bytes for this image). Runs the network once to downscale and once per candidate
    restored. Raises FloorError when none reaches the target with ``fallback="error"``, ValueError for an
    unknown fallback; decoding or model errors propagate. ``precision`` is the downscale's;
    ``check_precision`` (default: the same) the check restores', where bf16 demands ``BF16_MARGIN_DB`` more.
    ``prior``: how often each candidate (None: the source kept) was stored for earlier images; the likeliest
    are restored first. It never changes the answer when PSNR rises with bytes. ``photo``: the photo
    metadata written into every candidate (``lr_file.write_lr``), so its bytes count as stored.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"fallback must be one of {FALLBACKS}, got {fallback!r}")
    pixels, meta = downscale_pixels(ckpt, img, z_seed=z_seed, tile=tile, precision=precision)
    encoded = [(enc, write_lr(pixels, meta, enc, photo)) for enc in candidates_for(candidates, img.alpha is not None)]
    small = sorted((e for e in encoded if len(e[1]) < len(source_bytes)), key=lambda e: len(e[1]))  # stable
    crop = psnr_crop(meta.scale, img.width, img.height)
    check_precision = check_precision or precision
    need = target_psnr + (BF16_MARGIN_DB if check_precision == "bf16" else 0.0)
    tried: list[tuple[str, int, float]] = []
    psnrs: dict[int, float] = {}

    def passes(i: int) -> bool:
        enc, data = small[i]
        lr_meta, lr = read_lr(data)  # what the restore job reads back from the stored file
        hr = restore_pixels(ckpt, lr_meta, lr, tile=tile, precision=check_precision)
        psnrs[i] = psnr_y(hr[..., :3], img.rgb, crop=crop)
        tried.append((enc.label, len(data), psnrs[i]))
        return psnrs[i] >= need

    prior = prior or {}
    weights = [prior.get(enc, 0) + 1.0 for enc, _ in small] + [prior.get(None, 0) + 1.0]
    i = first_passing(len(small), passes, weights) if small else 0
    best = max(psnrs.values()) if psnrs else None
    if i < len(small):
        enc, data = small[i]
        return StoredLR(data, enc, meta, psnrs[i], best, len(tried), tried=tried)
    best_label = next((lbl for lbl, _, p in tried if p == best), None)
    best_txt = f"{best:.2f} dB ({best_label})" if best is not None else "none restored"
    if len(small) == len(encoded):  # no candidate was too large, and none reaches the target
        reason = f"no candidate reaches target_psnr {target_psnr:g} dB: best {best_txt}"
        if fallback == "error":
            raise FloorError(reason)
    else:
        dropped = len(encoded) - len(small)
        reason = (f"the source ({len(source_bytes)} bytes) is smaller than {dropped} of the candidates and "
                  f"no smaller candidate reaches {target_psnr:g} dB (best {best_txt})")
    return StoredLR(source_bytes, None, meta, math.inf, best, len(tried), reason, tried)

