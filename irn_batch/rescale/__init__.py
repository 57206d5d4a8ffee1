"""HR <-> LR with a loaded IRN: whole images (``images``), in overlapping windows (``tiling``), and how
the network runs, as names and numbers only (``settings``: precisions, tile geometry; torch-free).

The functions of ``images`` load torch on first use (PEP 562), so ``irn_batch.rescale.settings`` stays
importable without it.
"""
from irn_batch.rescale.settings import DEFAULT_OVERLAP, DEFAULT_TILE, MIN_TILE, PRECISIONS

_IMAGES = ("content_seed", "downscale_image", "downscale_pixels", "restore_image", "restore_pixels", "read_lr")
__all__ = ["DEFAULT_OVERLAP", "DEFAULT_TILE", "MIN_TILE", "PRECISIONS", *_IMAGES]


def __getattr__(name: str):
    if name in _IMAGES:
        from irn_batch.rescale import images
        return getattr(images, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
