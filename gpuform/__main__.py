from gpuform.cli.main import main

raise SystemExit(main())
