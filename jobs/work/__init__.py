"""The worker side: what a worker does with each kind of queued work, on one lifecycle.

jobs/tasks.py's RQ entry points call these, one line each; the request side (creating,
estimating, previewing, queueing) is jobs/services/. This package uses the services and the
models; the services never import it (a ``distill --sync`` runs work in its own process through
RQ's synchronous queue, still by the tasks' dotted paths). The engine (DSPy, torch) is imported
inside ``run`` bodies, in the work horse.

- base: the lifecycle every kind shares, claim → run → record → end (``Work``; ``RowWork`` for
  queued rows), the ``Ending`` a run returns, ``WorkFailed``, and the one progress throttle
- runs: a bootstrap run (and its smoke test's pause)
- finetunes: a fine-tune, its progress and log, its output model
- evaluations: an evaluation's candidates answering the same rows
- trainsets: a large upload imported on a worker
- playground: a playground try
- webhooks: a webhook delivery, try by try
- model_tests: a model test (a call, not a queued row)
"""
