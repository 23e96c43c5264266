from htakl_deploy.cli import main

raise SystemExit(main())
