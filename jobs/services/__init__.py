"""Workflows: each topic's rules live in one module here, and the pages, the admin, the
management commands and the RQ tasks all call them. Only this package talks to Redis/RQ.

- queue: every queued row (runs, fine-tunes, imports, evaluations, playground tries, webhook
  deliveries) is enqueued, cancelled, retried, marked failed and reconciled the same way; queue
  health, positions and a task's progress
- projects: creating a project, members and the last-owner rule
- model_policy: what models a project may use (keys, endpoints, files, fine-tuned ids)
- language_models: trying a model on a worker
- trainsets: upload, validation and import (in the request or on a worker)
- programs: program versions; whether a program fits a trainset
- runs: bootstrap runs and their traces
- smoke: the smoke test a run starts with, its verdict and its forecast
- rescoring: re-scoring a run's stored traces under another metric, without the teacher
- review: the review queue, decisions, edits and assignment
- review_stats: threshold, score histogram and label balance
- trace_sets: frozen trace sets, training rows, previews and exports
- finetunes: fine-tune jobs and their output models
- artifacts: a finished job's downloads and its DSPy program
- playground: one input answered by up to four models, side by side, on a worker
- evaluations: candidates scored on the same rows, their progress, and the evaluation a
  fine-tune queues when it succeeds
- comparisons: reading an evaluation's results: the verdict, the comparison page's rows and
  filters, the latest verdict per model and per job, exports
- errors: what pages may show of an error
- api_keys: project API keys (made, revoked, and checked for the JSON API and the model server)
- webhooks: signed POSTs to a project's URLs when a run, fine-tune or evaluation ends
"""
