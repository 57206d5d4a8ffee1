"""The network: IRN building blocks (``haar``, ``coupling``, ``recovery``), the assembled ``irn``, tensor
``transforms``, and checkpoints (``checkpoint``; ``checkpoint_header`` reads one's metadata without torch).

``IRN`` and ``IRNConfig`` load torch on first use (PEP 562), so ``irn_batch.model.checkpoint_header`` stays
importable by the torch-free CLI paths.
"""
__all__ = ["IRN", "IRNConfig"]


def __getattr__(name: str):
    if name in __all__:
        from irn_batch.model import irn
        return getattr(irn, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
