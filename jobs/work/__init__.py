"""The worker side: what a worker does with each kind of queued work, on one lifecycle.

jobs/tasks.py's RQ entry points call these, one line each; the request side (creating, estimating,
previewing, queueing) is jobs/services/. This package may use the services and the models; the
services never import it.

- base: the lifecycle every kind shares, claim → run → record → end (``Work``, ``RowWork``), the
  ``Ending`` a run returns, ``WorkFailed``, and the one progress throttle
- trainsets: a large upload imported on a worker
"""
