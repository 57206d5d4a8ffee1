"""Measuring restores: rate-distortion curves against standard codecs (``rd_curves`` the vocabulary, ``rd`` the measuring, ``rd_report``), BD-rate
(``bdrate``) and the paper's PSNR/SSIM table (``paper_table``). Above rescale and the quality floor; below
the CLI.
"""
