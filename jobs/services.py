"""Workflows that span several models, and the only module that talks to Redis/RQ.

Queued work follows one pattern (NetBox's Job.enqueue, without pickling instances): create the
row, choose the RQ job id ourselves, enqueue on commit with a dotted task path (the web process
never imports torch) and explicit timeouts and TTLs. The row, not Redis, is the record.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import django_rq
import redis
from django.conf import settings
from django.db import transaction
from django.utils.timezone import now
from rq import Callback, Queue, Worker
from rq.command import send_stop_job_command
from rq.exceptions import InvalidJobOperation, NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry

from jobs import model_policy
from jobs.devices import REDIS_FIELD as DEVICE_FIELD
from jobs.devices import parse_device
from jobs.engine.types import BootstrapConfig, FinetuneConfig, MetricSpec
from jobs.models import (
    BootstrapRun,
    FinetuneJob,
    LanguageModel,
    Program,
    ProgramVersion,
    Project,
    QueuedWork,
    Status,
    Trace,
    TraceSet,
    Trainset,
    TrainsetImport,
    TrainsetRow,
)

if TYPE_CHECKING:
    from django.contrib.auth.models import AbstractBaseUser

    from jobs.engine.types import FinetuneResult

logger = logging.getLogger(__name__)

BOOTSTRAP_QUEUE = "default"
FINETUNE_QUEUE = "gpu"
MODEL_TEST_QUEUE = "default"
MODEL_TEST_PROMPT = "Reply with one short sentence: what is knowledge distillation?"
# A queued row whose RQ job is missing is left alone this long (the enqueue happens on commit).
MISSING_JOB_GRACE_S = 60


# --- queues -----------------------------------------------------------------------------------


_inline = False


def get_queue(name: str) -> Queue:
    """One seam for the queues. We enqueue in transaction.on_commit ourselves, hence 'auto'."""
    return django_rq.get_queue(name, commit_mode="auto", is_async=not _inline)


@contextlib.contextmanager
def tasks_inline() -> Iterator[None]:
    """`distill --sync`: RQ runs each job in this process as it is enqueued (still recorded in Redis)."""
    global _inline
    _inline = True
    try:
        yield
    finally:
        _inline = False


def redis_connection() -> redis.Redis:
    return django_rq.get_connection(BOOTSTRAP_QUEUE)


def fetch_rq_job(rq_job_id: str, connection: redis.Redis | None = None) -> Job:
    """An RQ job read back with the queues' JSON serializer (settings.BFT_RQ_SERIALIZER)."""
    return Job.fetch(
        rq_job_id,
        connection=connection or redis_connection(),
        serializer=settings.BFT_RQ_SERIALIZER,
    )


def _enqueue_on_commit(row: QueuedWork, *, queue_name: str, task: str, timeout: int) -> None:
    rq_job_id = str(
        row.rq_job_id
    )  # chosen by us: enqueue() returns nothing useful inside a transaction

    def enqueue() -> None:
        try:
            get_queue(queue_name).enqueue(
                task,
                row.pk,
                job_id=rq_job_id,
                job_timeout=timeout,
                result_ttl=settings.BFT_RQ_RESULT_TTL_S,
                failure_ttl=settings.BFT_RQ_RESULT_TTL_S,
                on_failure=Callback("jobs.tasks.on_work_failure"),
                description=f"{task}({row.pk})",
            )
        except (
            redis.RedisError
        ) as exc:  # Redis down: the row says so (retry later) instead of a 500
            logger.warning("could not enqueue %s %s: %s", row._meta.model_name, row.pk, exc)
            row.mark_finished(
                Status.FAILED,
                error=f"The queue was unavailable, so this was never queued ({exc}). Retry once it is back.",
            )

    transaction.on_commit(enqueue)


# --- project content (trainset imports live in jobs/imports.py) -------------------------------


def create_program_version(
    *,
    project: Project,
    name: str,
    source: str | bytes | dict[str, Any],
    user: AbstractBaseUser,
    fmt: str | None = None,
) -> ProgramVersion:
    """Parse and validate a declarative spec; store it as the program's next version."""
    from jobs.engine.programs import parse_program_spec

    spec = parse_program_spec(source, fmt=fmt)  # ProgramSpecError (a ValueError) names the problem
    with transaction.atomic():
        program, _ = Program.objects.get_or_create(
            project=project, name=name, defaults={"created_by": user}
        )
        program = Program.objects.select_for_update().get(pk=program.pk)
        latest = program.latest_version
        if latest is not None and latest.spec == spec.to_dict():
            return latest
        return ProgramVersion.objects.create(
            program=program,
            version=(latest.version + 1) if latest else 1,
            spec=spec.to_dict(),
            created_by=user,
        )


# --- bootstrap runs ---------------------------------------------------------------------------


def create_bootstrap_run(
    *,
    project: Project,
    trainset: Trainset,
    program_version: ProgramVersion,
    teacher: LanguageModel,
    metric: MetricSpec,
    config: BootstrapConfig,
    user: AbstractBaseUser,
    skip_missing: bool = False,
) -> BootstrapRun:
    """Queue a bootstrap run. Train rows that lack a program input or the metric's field (or hold
    null there) refuse it, unless ``skip_missing``: then they are counted as skipped, never sent."""
    from jobs.engine.metrics import validate_metric_spec
    from jobs.engine.programs import check_fields

    for obj, what in (
        (trainset, "trainset"),
        (program_version.program, "program"),
        (teacher, "teacher"),
    ):
        if obj.project_id != project.pk:
            raise ValueError(f"The {what} belongs to another project.")
    model_policy.check_model(teacher)
    if trainset.status != Trainset.Status.READY:
        raise ValueError(f"Trainset {trainset.name!r} is not ready ({trainset.status}).")
    spec = program_version.to_spec()
    validate_metric_spec(metric, spec.output_fields)
    problems = check_fields(spec, trainset.field_names, label_fields=(metric.field,))
    if problems:
        raise ValueError("The program does not fit the trainset: " + "; ".join(problems))
    if config.limit is not None and config.limit < 1:
        raise ValueError("The limit must be at least 1.")
    missing = trainset.rows_missing([*spec.input_fields, metric.field])
    if missing.count and not skip_missing:
        raise ValueError(f"{missing}. Fix the file, or skip the rows missing a field.")
    n_train = trainset.rows.filter(split=TrainsetRow.Split.TRAIN).count() - missing.count
    if n_train < 1:
        what = "rows with every field the run needs" if missing.count else "rows"
        raise ValueError(f"Trainset {trainset.name!r} has no {what} in its train split.")
    if (
        config.temperature is None
    ):  # recorded, so a later edit of the model does not rewrite the run
        config = dataclasses.replace(config, temperature=teacher.temperature)
    with transaction.atomic():
        Trainset.objects.select_for_update().filter(pk=trainset.pk).first()  # not while re-split
        run = BootstrapRun.objects.create(
            project=project,
            trainset=trainset,
            program_version=program_version,
            teacher=teacher,
            metric=metric.to_dict(),
            config=config.to_dict(),
            total=min(n_train, config.limit) if config.limit else n_train,
            skipped=missing.count,
            created_by=user,
        )
        _enqueue_bootstrap(run)
    return run


def _enqueue_bootstrap(run: BootstrapRun) -> None:
    _enqueue_on_commit(
        run,
        queue_name=BOOTSTRAP_QUEUE,
        task="jobs.tasks.run_bootstrap",
        timeout=settings.BFT_BOOTSTRAP_TIMEOUT_S,
    )


def bootstrap_inputs(
    run: BootstrapRun,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], set[int]]:
    """(examples, demos, skip) for the engine: the train split, its rows as demos, finished traces.

    Rows that lack a program input or the metric's field (or hold null there) are left out of
    both: the teacher never sees them (the run counted them as ``skipped``)."""
    from jobs.engine.trainsets import lacks_fields

    needed = [*run.program_version.to_spec().input_fields, run.metric_spec().field]
    rows = [
        (index, data)
        for index, data in run.trainset.rows.filter(split=TrainsetRow.Split.TRAIN)
        .order_by("index")
        .values_list("index", "data")
        if not lacks_fields(data, needed)
    ]
    examples = [{"index": index, "data": data} for index, data in rows]
    demos = [data for _index, data in rows]
    skip = set(run.traces.values_list("example_index", flat=True))
    return examples, demos, skip


def record_traces(
    run: BootstrapRun, records: list[dict[str, Any]], *, split: str = "train"
) -> None:
    """Store finished examples; a duplicate example_index (a resumed run) is ignored."""
    names = {f.name for f in Trace._meta.concrete_fields} - {"id", "run", "split", "created"}
    Trace.objects.bulk_create(
        [
            Trace(run=run, split=split, **{k: v for k, v in r.items() if k in names})
            for r in records
        ],
        ignore_conflicts=True,
    )


def refresh_run_counts(run: BootstrapRun) -> None:
    """Counters from the stored traces, so they stay right across resumes."""
    from django.db.models import Count, Q, Sum

    agg = run.traces.aggregate(
        done=Count("pk"),
        errored=Count("pk", filter=~Q(error="")),
        passed=Count("pk", filter=Q(error="", passed=True)),
        lm_calls=Sum("lm_calls"),
        tokens=Sum("tokens"),
    )
    BootstrapRun.objects.filter(pk=run.pk).update(
        done=agg["done"],
        errored=agg["errored"],
        passed=agg["passed"],
        failed=agg["done"] - agg["errored"] - agg["passed"],
        lm_calls=agg["lm_calls"] or 0,
        tokens=agg["tokens"] or 0,
        updated=now(),
    )


def cancel_run(*, run: BootstrapRun, user: AbstractBaseUser | None = None) -> BootstrapRun:
    return _cancel(run)


def retry_run(*, run: BootstrapRun, user: AbstractBaseUser | None = None) -> BootstrapRun:
    """Same row back to queued under a new RQ id; finished traces are kept and skipped."""
    with transaction.atomic():
        if not run.reset_for_retry():
            raise ValueError(
                f"Only a failed or cancelled run can be retried (this one is {run.status})."
            )
        _enqueue_bootstrap(run)
    return run


# --- fine-tune jobs ---------------------------------------------------------------------------


def check_student(student: LanguageModel, project: Project) -> None:
    """ValueError unless ``student`` can be fine-tuned in ``project``."""
    if student.project_id != project.pk:
        raise ValueError("The student belongs to another project.")
    model_policy.check_model(student)
    if not student.is_local:
        raise ValueError(
            f"Student {student.name!r} is a {student.kind} model; only local models fine-tune here."
        )
    if not student.fine_tunable:
        raise ValueError(f"Student {student.name!r} is not marked fine-tunable.")


def create_finetune_job(
    *,
    run: BootstrapRun,
    student: LanguageModel,
    config: FinetuneConfig,
    selection: str = FinetuneJob.Selection.APPROVED,
    multitask: bool = True,
    exclude_demos: bool = True,
    user: AbstractBaseUser,
    trace_set: TraceSet | None = None,
) -> FinetuneJob:
    """Queue a fine-tune on ``trace_set``, or on the ``selection`` frozen now as a new trace set."""
    from jobs import review
    from jobs.engine.finetune import validate_config

    check_student(student, run.project)
    if selection not in FinetuneJob.Selection.values:
        raise ValueError(f"Unknown trace selection {selection!r}.")
    if trace_set is not None and trace_set.run_id != run.pk:
        raise ValueError("The trace set belongs to another run.")
    if trace_set is None and not run.traces.for_selection(selection).exists():
        label = FinetuneJob.Selection(selection).label
        raise ValueError(f"No traces to train on: the run has no {label} traces.")
    config = dataclasses.replace(config, base_model=student.model_name)
    validate_config(config)
    with transaction.atomic():
        if (
            trace_set is None
        ):  # every job trains on a frozen set, so its model id traces back to rows
            trace_set = review.freeze_trace_set(run=run, user=user, selection=selection)
        selection = trace_set.rule.get("selection", selection)
        job = FinetuneJob.objects.create(
            trace_set=trace_set,
            project=run.project,
            run=run,
            student=student,
            config=config.to_dict(),
            selection=selection,
            multitask=multitask,
            exclude_demos=exclude_demos,
            created_by=user,
        )
        _enqueue_finetune(job)
    return job


def _enqueue_finetune(job: FinetuneJob) -> None:
    _enqueue_on_commit(
        job,
        queue_name=FINETUNE_QUEUE,
        task="jobs.tasks.run_finetune",
        timeout=settings.BFT_FINETUNE_TIMEOUT_S,
    )


def job_output_dir(job: FinetuneJob) -> Path:
    return Path(settings.BFT_ARTIFACTS_DIR) / "jobs" / str(job.pk)


def prepare_output_dir(job: FinetuneJob) -> Path:
    """The job's artifact dir. On a first start, a leftover dir (from an older database) is moved aside."""
    path = job_output_dir(job)
    if not job.output_dir and path.exists():
        shutil.move(path, path.with_name(f"{path.name}.stale-{int(time.time())}"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def training_rows(job: FinetuneJob) -> list[dict[str, Any]]:
    """Chat rows from the job's traces, reviewers' edits applied, exactly as DSPy formats them."""
    from jobs.review import trace_set_training_rows
    from jobs.training_rows import rows_from_records, trace_record

    if job.trace_set_id:  # the frozen set: decisions and edits as they were when it was frozen
        return trace_set_training_rows(
            job.trace_set, multitask=job.multitask, exclude_demos=job.exclude_demos
        )
    traces = job.run.traces.for_selection(job.selection).order_by("example_index")
    records = [trace_record(trace) for trace in traces]
    return rows_from_records(records, multitask=job.multitask, exclude_demos=job.exclude_demos)


def frozen_training_rows(job: FinetuneJob, output_dir: Path) -> list[dict[str, Any]]:
    """The rows are built once per job and kept in its dir, so a retry trains on the same data."""
    import json

    path = output_dir / "rows.jsonl"
    if path.exists():
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    rows = training_rows(job)
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(json.dumps(row) + "\n" for row in rows))
    tmp.rename(path)
    return rows


def finish_finetune(job: FinetuneJob, result: FinetuneResult) -> LanguageModel | None:
    """Mark the job succeeded and register its output as a model of the same project."""
    with transaction.atomic():
        if not job.mark_finished(
            Status.SUCCEEDED,
            output_model_id=result.model_id,
            output_dir=result.output_dir,
            step=result.steps,
            total_steps=result.total_steps,
            checkpoint_step=result.steps,
            last_loss=result.final_loss,
        ):
            return None
        student = job.student
        model, _ = LanguageModel.objects.get_or_create(
            project=job.project,
            name=f"{student.name} ft-{job.pk}",
            defaults={
                "kind": LanguageModel.Kind.LOCAL,
                "model_name": result.model_id,
                "fine_tunable": True,
                "temperature": student.temperature,
                "max_tokens": student.max_tokens,
                "source_job": job,
                "created_by": job.created_by,
            },
        )
    return model


def cancel_job(*, job: FinetuneJob, user: AbstractBaseUser | None = None) -> FinetuneJob:
    return _cancel(job)


def retry_job(*, job: FinetuneJob, user: AbstractBaseUser | None = None) -> FinetuneJob:
    """Same row back to queued under a new RQ id; training resumes from its last checkpoint."""
    with transaction.atomic():
        if not job.reset_for_retry():
            raise ValueError(
                f"Only a failed or cancelled job can be retried (this one is {job.status})."
            )
        _enqueue_finetune(job)
    return job


# --- cancel and reconcile (shared by runs and jobs) ------------------------------------------


def _cancel(row: QueuedWork) -> QueuedWork:
    """Queued: cancelled at once. Running: a cooperative stop, then a hard stop after the grace period."""
    if row.cancel_if_queued():
        # Tidy the queue; the worker's claim would fail anyway: the row is no longer queued.
        with contextlib.suppress(NoSuchJobError, InvalidJobOperation, redis.RedisError):
            fetch_rq_job(str(row.rq_job_id)).cancel()
        return row
    if not row.request_cancel():
        raise ValueError(f"Only a queued or running {row._meta.verbose_name} can be cancelled.")
    return row


def _rq_job_problem(row: QueuedWork, connection: redis.Redis) -> tuple[str, str] | None:
    """(status, reason) when the row's RQ job says the row can no longer progress, else None."""
    try:
        job = fetch_rq_job(str(row.rq_job_id), connection)
    except NoSuchJobError:
        if row.updated and row.updated > now() - timedelta(seconds=MISSING_JOB_GRACE_S):
            return None
        return Status.FAILED, "The queue lost this job (its RQ job no longer exists)."
    rq_status = job.get_status(refresh=False)
    if rq_status == JobStatus.FAILED:
        result = job.latest_result()
        detail = (result.exc_string or "").strip().splitlines()[-1:] if result else []
        return Status.FAILED, "The worker failed: " + (
            detail[0] if detail else "no reason recorded"
        )
    if rq_status == JobStatus.STOPPED:
        if row.cancel_requested:
            return Status.CANCELLED, "Stopped by a hard stop after the cancel grace period."
        return Status.FAILED, "The job was stopped on the worker."
    if rq_status == JobStatus.CANCELED:
        return Status.CANCELLED, "Cancelled in the queue."
    if rq_status == JobStatus.FINISHED:
        return Status.FAILED, "The worker finished without recording a result."
    if rq_status == JobStatus.STARTED and not worker_alive(job.worker_name, connection):
        return (
            Status.FAILED,
            f"The worker {job.worker_name or '(unknown)'} died while running this job.",
        )
    return None


def worker_heartbeat_s() -> int:
    return int(getattr(settings, "BFT_WORKER_HEARTBEAT_S", 10))


def worker_alive(name: str | None, connection: redis.Redis) -> bool:
    """A busy worker heartbeats every BFT_WORKER_HEARTBEAT_S; three missed beats mean it died."""
    if not name:
        return True  # nothing to judge by
    worker = Worker.find_by_key(Worker.redis_worker_namespace_prefix + name, connection=connection)
    if worker is None:
        return False
    if worker.last_heartbeat is None:
        return True
    limit = timedelta(seconds=3 * worker_heartbeat_s() + 10)
    last = worker.last_heartbeat
    if last.tzinfo is None:
        last = last.replace(tzinfo=UTC)
    return now() - last < limit


def _hard_stop_overdue(row: QueuedWork, connection: redis.Redis) -> None:
    grace = timedelta(seconds=settings.BFT_CANCEL_GRACE_S)
    if not (
        row.cancel_requested and row.cancel_requested_at and row.cancel_requested_at < now() - grace
    ):
        return
    try:
        send_stop_job_command(connection, str(row.rq_job_id))
        logger.info("hard stop sent to %s %s", row._meta.model_name, row.pk)
    except Exception as exc:  # the job is not running any more: the next pass reconciles it
        logger.info("hard stop of %s %s not sent: %s", row._meta.model_name, row.pk, exc)


def reconcile_row(row: QueuedWork, connection: redis.Redis | None = None) -> bool:
    """End an active row whose RQ job failed, stopped, vanished or lost its worker. True if changed."""
    if not row.is_active:
        return False
    connection = connection or redis_connection()
    problem = _rq_job_problem(row, connection)
    if problem is None:
        _hard_stop_overdue(row, connection)
        return False
    status, reason = problem
    changed = row.mark_finished(status, error=reason)
    if changed:
        logger.warning("%s %s reconciled as %s: %s", row._meta.model_name, row.pk, status, reason)
    return changed


class QueueUnavailable(Exception):
    """Redis did not answer: pages say "queue unavailable" instead of failing."""


def queue_name_for(row: QueuedWork) -> str:
    return FINETUNE_QUEUE if isinstance(row, FinetuneJob) else BOOTSTRAP_QUEUE


def queue_position(row: QueuedWork) -> tuple[int | None, int]:
    """(1-based position of the row's RQ job in its queue, or None if not in it; jobs waiting)."""
    try:
        queue = get_queue(queue_name_for(row))
        position = queue.get_job_position(str(row.rq_job_id))
        return (None if position is None else position + 1), queue.count
    except redis.RedisError as exc:
        raise QueueUnavailable(str(exc)) from exc


def reconcile_if_stale(row: QueuedWork, *, stale_after_s: float) -> bool:
    """For status pages: reconcile an active row only when its heartbeat (``updated``) is older than
    ``stale_after_s`` or its cancel's grace period is over, so a healthy poll never touches Redis."""
    if not row.is_active:
        return False
    stale = row.updated is None or row.updated < now() - timedelta(seconds=stale_after_s)
    grace = timedelta(seconds=settings.BFT_CANCEL_GRACE_S)
    overdue = (
        row.cancel_requested and row.cancel_requested_at and row.cancel_requested_at < now() - grace
    )
    if not (stale or overdue):
        return False
    try:
        return reconcile_row(row)
    except redis.RedisError as exc:
        raise QueueUnavailable(str(exc)) from exc


def mark_failed(*, row: QueuedWork, user: AbstractBaseUser | None = None) -> QueuedWork:
    """An operator's verdict on a stuck row (admin): failed now; its RQ job is stopped if Redis answers."""
    if not row.mark_finished(Status.FAILED, error=f"Marked failed by {user or 'an operator'}."):
        raise ValueError(f"Only a queued or running {row._meta.verbose_name} can be marked failed.")
    with contextlib.suppress(NoSuchJobError, InvalidJobOperation, redis.RedisError):
        rq_job = fetch_rq_job(str(row.rq_job_id))
        if rq_job.get_status() == JobStatus.STARTED:
            send_stop_job_command(redis_connection(), rq_job.id)
        else:
            rq_job.cancel()
    return row


def reconcile_stale() -> list[QueuedWork]:
    """Mark failed every queued/running row that can no longer progress; returns the rows changed."""
    connection = redis_connection()
    for name in settings.RQ_QUEUES:
        # RQ moves abandoned jobs (expired in the started registry) to failed, running our callback.
        StartedJobRegistry(queue=get_queue(name)).cleanup()
    changed: list[QueuedWork] = []
    for model in (BootstrapRun, FinetuneJob, TrainsetImport):
        for row in model.objects.filter(status__in=QueuedWork.ACTIVE):
            if reconcile_row(row, connection):
                changed.append(row)
    from jobs.imports import settle_ended_imports

    settle_ended_imports()  # an ended import's trainset fails and its stored file goes
    return changed


# --- model tests and queue health --------------------------------------------------------------


def enqueue_model_test(*, model: LanguageModel, user: AbstractBaseUser | None = None) -> str:
    """Run a one-prompt try of the model on a worker; the task stores the answer or the error.

    ModelPolicyError when the installation does not allow the model; QueueUnavailable when Redis
    does not answer. Pages tell a pending test by ``last_test_at`` older than the request.
    """
    model_policy.check_model(model)
    rq_job_id = f"model-test-{model.pk}-{int(time.time() * 1000)}"
    try:
        _enqueue_model_test(model, rq_job_id)
    except redis.RedisError as exc:
        raise QueueUnavailable(str(exc)) from exc
    return rq_job_id


def _enqueue_model_test(model: LanguageModel, rq_job_id: str) -> None:
    get_queue(MODEL_TEST_QUEUE).enqueue(
        "jobs.tasks.run_model_test",
        model.pk,
        job_id=rq_job_id,
        job_timeout=settings.BFT_MODEL_TEST_TIMEOUT_S,
        result_ttl=settings.BFT_RQ_RESULT_TTL_S,
        failure_ttl=settings.BFT_RQ_RESULT_TTL_S,
        on_failure=Callback("jobs.tasks.on_model_test_failure"),
        description=f"test model {model.name}",
    )


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    queues: list[str]
    state: str
    current_job_id: str | None
    last_heartbeat: Any
    device: dict[str, Any] = field(default_factory=dict)  # jobs/devices.py: {"kind", "label", ...}


@dataclass(frozen=True)
class QueueHealth:
    redis_ok: bool
    error: str = ""
    queues: dict[str, int] = field(default_factory=dict)  # name -> jobs waiting
    workers: list[WorkerInfo] = field(default_factory=list)

    def workers_for(self, queue_name: str) -> list[WorkerInfo]:
        return [w for w in self.workers if queue_name in w.queues]


def queue_health() -> QueueHealth:
    """Whether Redis answers, queue lengths and live workers. Never raises."""
    try:
        connection = redis.Redis.from_url(
            settings.REDIS_URL, socket_connect_timeout=2, socket_timeout=5
        )
        connection.ping()
        queues = {name: Queue(name, connection=connection).count for name in settings.RQ_QUEUES}
        workers = [
            WorkerInfo(
                name=w.name,
                queues=w.queue_names(),
                state=str(w.get_state()),
                current_job_id=w.get_current_job_id(),
                last_heartbeat=w.last_heartbeat,
                device=parse_device(connection.hget(w.key, DEVICE_FIELD)),
            )
            for w in Worker.all(connection=connection)
            if worker_alive(w.name, connection)
        ]
    except Exception as exc:  # Redis down, misconfigured URL, ...: report, never raise
        return QueueHealth(redis_ok=False, error=f"{type(exc).__name__}: {exc}")
    return QueueHealth(redis_ok=True, queues=queues, workers=sorted(workers, key=lambda w: w.name))
