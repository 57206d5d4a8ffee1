"""Bytes <-> pixels: decoding any supported image (``decode``), writing containers and LR files with their
metadata (``container``), photo metadata (``photo_metadata``, ``xmp``) and what a source file was
(``source_format``). Nothing here knows about storage, models or jobs.
"""
