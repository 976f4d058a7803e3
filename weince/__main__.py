"""``python -m weince``: the command line (``weince.cli``), imported only when run."""

from weince.cli import main

raise SystemExit(main())
