"""One-release aliases: trainset imports queued before the restructure name these paths.

Remove after the next release; the tasks live in jobs/tasks.py.
"""

from __future__ import annotations

from jobs.tasks import on_work_failure as on_import_failure
from jobs.tasks import run_trainset_import

__all__ = ["on_import_failure", "run_trainset_import"]
