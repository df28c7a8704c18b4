from liveness.cli import main

raise SystemExit(main())
