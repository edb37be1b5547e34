"""The request side's workflows: what a page, the API, the admin or a command does (create,
validate, estimate, preview, queue, review, read). Each topic's rules live in one module here;
the worker side (what a worker does with queued work) is jobs/work/, which uses these and which
these never import. Only this package talks to Redis/RQ.

- queue: every queued row (runs, fine-tunes, imports, evaluations, playground tries, webhook
  deliveries) is enqueued, cancelled, retried, marked failed and reconciled the same way; queue
  health, positions, the queue's view of a row, and a task's progress in its RQ job
- projects: creating a project, members and the last-owner rule
- model_policy: what models a project may use (keys, endpoints, files, fine-tuned ids)
- language_models: queueing a model test
- trainsets: upload, validation and import (in the request, or queued for a worker)
- programs: program versions; whether a program fits a trainset (the one fit check)
- runs: bootstrap runs, their estimate, and the rules their worker follows (rows, demos, counts)
- smoke: the smoke test a run starts with, its verdict and its forecast
- rescoring: re-scoring a run's stored traces under another metric, without the teacher
- review: the review queue, decisions, edits and assignment
- review_stats: threshold, score histogram and label balance
- trace_sets: frozen trace sets, training rows, previews and exports
- finetunes: fine-tune jobs and the rows a job trains on
- artifacts: a finished job's downloads (their names) and its DSPy program
- playground: one input for up to four models, side by side, queued for a worker
- evaluations: candidates scored on the same rows (creating, their rows, their progress), and
  the evaluation a fine-tune queues when it succeeds
- comparisons: reading an evaluation's results: the verdict, the comparison page's rows and
  filters, the latest verdict per model and per job, exports
- errors: what pages may show of an error
- api_keys: project API keys (made, revoked, and checked for the JSON API and the model server)
- webhooks: registering a project's URLs, the signed payload of each run, fine-tune or
  evaluation that ends, and queueing its deliveries
"""
