from weince.cli import main

raise SystemExit(main())
