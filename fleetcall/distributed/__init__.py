"""fleetcall on a Ray cluster (the ``[ray]`` extra): one scheduler shared by many replicas.

Nothing here imports Ray until it is used: the shared scheduler's bookkeeping
(:mod:`~fleetcall.distributed.shared`), its asyncio shell (:mod:`~fleetcall.distributed.server`)
and the replica's core client (:mod:`~fleetcall.distributed.remote`) are plain Python and run
in-process (the herd benchmark, tests); :mod:`~fleetcall.distributed.actor` puts the server in
a Ray actor, :mod:`~fleetcall.distributed.pool` gives the replica-side pool, and
:mod:`~fleetcall.distributed.tools` runs tools as Ray tasks.
"""
