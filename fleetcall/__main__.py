"""``python -m fleetcall``: the command line (same as the ``fleetcall`` script)."""

from fleetcall.cli import main

raise SystemExit(main())
