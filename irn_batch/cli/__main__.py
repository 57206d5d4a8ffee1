from irn_batch.cli.main import main

raise SystemExit(main())
