from sslstudio.cli import main

raise SystemExit(main())
