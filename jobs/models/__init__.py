"""bftweb's data model, one module per topic. Every object belongs to exactly one Project
(directly or through its parent); a user of another project gets a 404 for it.

- projects: Project, Membership (roles)
- language_models: LanguageModel (teachers and students)
- trainsets: Trainset, TrainsetRow, TrainsetImport (a large upload imported by a worker)
- programs: Program, ProgramVersion
- queued_work: QueuedWork, the state machine every queued row shares (Status)
- runs: BootstrapRun, Trace (one per bootstrapped example), TraceSelection
- review: TraceDecision (the review history), TraceSet and TraceSetItem (frozen selections)
- finetunes: FinetuneJob, FinetuneMetric
- evaluations: Evaluation (queued), EvaluationCandidate (a model and its prompting),
  EvaluationResult (one candidate's answer to one row)
"""

from __future__ import annotations

from jobs.models.evaluations import Evaluation, EvaluationCandidate, EvaluationResult
from jobs.models.finetunes import FinetuneJob, FinetuneMetric
from jobs.models.language_models import LanguageModel
from jobs.models.programs import Program, ProgramVersion
from jobs.models.projects import Membership, Project
from jobs.models.queued_work import QueuedWork, Status
from jobs.models.review import TraceDecision, TraceSet, TraceSetItem
from jobs.models.runs import BootstrapRun, Trace, TraceQuerySet, TraceSelection
from jobs.models.trainsets import MissingRows, Trainset, TrainsetImport, TrainsetRow

__all__ = [
    "BootstrapRun",
    "Evaluation",
    "EvaluationCandidate",
    "EvaluationResult",
    "FinetuneJob",
    "FinetuneMetric",
    "LanguageModel",
    "Membership",
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
]
