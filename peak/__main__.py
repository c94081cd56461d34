from peak.cli import main

raise SystemExit(main())
