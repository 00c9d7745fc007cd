"""``python -m fleetcall.cli``: the command line (same as ``python -m fleetcall``)."""

from fleetcall.cli import main

raise SystemExit(main())
