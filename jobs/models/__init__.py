"""bftweb's data model, one module per topic. Every object belongs to exactly one Project
(directly or through its parent); a user of another project gets a 404 for it.

- projects: Project, Membership (roles)
- language_models: LanguageModel (teachers and students)
- trainsets: Trainset, TrainsetRow, TrainsetImport (a large upload imported by a worker)
- programs: Program, ProgramVersion
- queued_work: QueuedWork, the state machine every queued row shares (Status); ScoredWork, one
  that scores rows with a metric (runs, evaluations)
- runs: BootstrapRun, Trace (one per bootstrapped example), TraceSelection
- review: TraceDecision (the review history), TraceSet and TraceSetItem (frozen selections)
- finetunes: FinetuneJob, FinetuneMetric
- playground: PlaygroundTry (one input answered by up to four models, on a worker)
- evaluations: Evaluation (queued), EvaluationCandidate (a model and its prompting),
  EvaluationResult (one candidate's answer to one row)
- api_keys: ApiKey (a project's key for the JSON API, stored hashed)
- webhooks: Webhook (a project's URL told when work ends), WebhookDelivery (queued: one event to
  one webhook), WebhookAttempt (one HTTP try)
"""

from __future__ import annotations

from jobs.models.api_keys import ApiKey
from jobs.models.evaluations import Evaluation, EvaluationCandidate, EvaluationResult
from jobs.models.finetunes import FinetuneJob, FinetuneMetric
from jobs.models.language_models import LanguageModel
from jobs.models.playground import PlaygroundTry
from jobs.models.programs import Program, ProgramVersion
from jobs.models.projects import Membership, Project
from jobs.models.queued_work import QueuedWork, Status
from jobs.models.review import TraceDecision, TraceSet, TraceSetItem
from jobs.models.runs import BootstrapRun, Trace, TraceQuerySet, TraceSelection
from jobs.models.trainsets import MissingRows, Trainset, TrainsetImport, TrainsetRow
from jobs.models.webhooks import Webhook, WebhookAttempt, WebhookDelivery

__all__ = [
    "ApiKey",
    "BootstrapRun",
    "Evaluation",
    "EvaluationCandidate",
    "EvaluationResult",
    "FinetuneJob",
    "FinetuneMetric",
    "LanguageModel",
    "Membership",
    "PlaygroundTry",
    "MissingRows",
    "Program",
    "ProgramVersion",
    "Project",
    "QueuedWork",
    "Status",
    "Trace",
    "TraceDecision",
    "TraceQuerySet",
    "TraceSelection",
    "TraceSet",
    "TraceSetItem",
    "Trainset",
    "TrainsetImport",
    "TrainsetRow",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
]
