from kubenas.cli import main

raise SystemExit(main())
