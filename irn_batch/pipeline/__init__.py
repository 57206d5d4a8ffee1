"""Ray batch pipeline: ingest (HR -> LR + manifest), restore (LR -> HR) and verify over fsspec storage."""
