"""IRN building blocks (``haar``, ``coupling``) and the assembled network (``irn``)."""
from irn_batch.model.irn import IRN, IRNConfig

__all__ = ["IRN", "IRNConfig"]
