from contribflow.cli import main

raise SystemExit(main())
