"""``python -m irn_batch``: the same as the ``irn-batch`` command."""
from irn_batch.cli import main

raise SystemExit(main())
