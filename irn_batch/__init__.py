"""irn_batch: invertible image rescaling at scale."""

__version__ = "0.1.0"
