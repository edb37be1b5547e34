"""bftweb's data model. Every object belongs to exactly one Project (directly or via its parent).

Queued work (BootstrapRun, FinetuneJob) is an explicit state machine whose transitions are
single conditional UPDATEs, so a worker claiming a row and a user cancelling it cannot both win.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.db import models, transaction
from django.utils.timezone import now

if TYPE_CHECKING:
    from jobs.engine.programs import ProgramSpec
    from jobs.engine.types import BootstrapConfig, FinetuneConfig, MetricSpec, ModelSpec


class Project(models.Model):
    """A team workspace. Members see everything in it and nothing outside it."""

    name = models.CharField(max_length=100, unique=True)
    slug = models.SlugField(max_length=100, unique=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def role_of(self, user: Any) -> str | None:
        if not getattr(user, "is_authenticated", False):
            return None
        return self.memberships.filter(user=user).values_list("role", flat=True).first()


class Membership(models.Model):
    class Role(models.TextChoices):
        OWNER = "owner"
        OPERATOR = "operator"  # creates runs and jobs
        REVIEWER = "reviewer"  # reviews traces
        VIEWER = "viewer"  # reads

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="memberships")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="memberships"
    )
    role = models.CharField(max_length=16, choices=Role, default=Role.VIEWER)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["project", "user"], name="unique_membership")
        ]

    def __str__(self) -> str:
        return f"{self.user} ({self.role}) in {self.project}"


class LanguageModel(models.Model):
    """A teacher or student LM. API keys are never stored: ``api_key_env`` names the variable."""

    class Kind(models.TextChoices):
        LOCAL = "local"
        LITELLM = "litellm"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="models")
    name = models.CharField(max_length=100)
    kind = models.CharField(max_length=16, choices=Kind, default=Kind.LOCAL)
    # What the engine's ModelSpec.name gets: "smollm2", an HF dir, a .gguf path, a LiteLLM string,
    # or a fine-tuned id "bftweb:<student>:ft-<job>".
    model_name = models.CharField(max_length=500)
    api_base = models.CharField(max_length=500, blank=True)
    api_key_env = models.CharField(max_length=100, blank=True)
    fine_tunable = models.BooleanField(default=False)
    temperature = models.FloatField(default=0.0)
    max_tokens = models.PositiveIntegerField(default=256)
    source_job = models.ForeignKey(
        "FinetuneJob",
        on_delete=models.SET_NULL,
        null=True,
        blank=True,
        related_name="output_models",
    )
    last_test_output = models.TextField(blank=True)
    last_test_error = models.TextField(blank=True)
    last_test_at = models.DateTimeField(null=True, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_model_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def is_local(self) -> bool:
        return self.kind == self.Kind.LOCAL

    @property
    def in_use(self) -> bool:
        """A teacher of a run, a student of a fine-tune, or a fine-tune's output."""
        return bool(self.source_job_id or self.teacher_runs.exists() or self.student_jobs.exists())

    def to_spec(self) -> ModelSpec:
        from jobs.engine.types import ModelSpec

        return ModelSpec(
            kind=self.kind,
            name=self.model_name,
            api_base=self.api_base,
            api_key_env=self.api_key_env,
            temperature=self.temperature,
            max_tokens=self.max_tokens,
        )


class Trainset(models.Model):
    class Format(models.TextChoices):
        JSONL = "jsonl"
        CSV = "csv"

    class Status(models.TextChoices):
        IMPORTING = "importing"
        READY = "ready"
        FAILED = "failed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="trainsets")
    name = models.CharField(max_length=200)
    file_name = models.CharField(max_length=300, blank=True)
    fmt = models.CharField(max_length=8, choices=Format, default=Format.JSONL)
    row_count = models.PositiveIntegerField(default=0)
    fields = models.JSONField(default=list, blank=True)  # [{"name", "type", "fill_rate"}, ...]
    dev_ratio = models.FloatField(default=0.2)
    split_seed = models.IntegerField(default=0)
    status = models.CharField(max_length=16, choices=Status, default=Status.IMPORTING)
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return self.name

    @property
    def field_names(self) -> list[str]:
        return [f["name"] for f in self.fields]

    @staticmethod
    def check_split(seed: int) -> None:
        """ValueError unless ``seed`` fits the split_seed column (a 32-bit integer everywhere)."""
        if not SPLIT_SEED_MIN <= seed <= SPLIT_SEED_MAX:
            raise ValueError(
                f"The split seed must be between {SPLIT_SEED_MIN:,} and {SPLIT_SEED_MAX:,}."
            )

    def place(self, source_number: int | None, index: int) -> str:
        """Where a row was in the uploaded file, as the upload's errors name it."""
        from jobs.engine.trainsets import place_name

        if source_number is None:  # imported before rows kept their place
            return f"row #{index}"
        return place_name(self.fmt, source_number)

    def rows_missing(self, names: Iterable[str], *, shown: int = 5) -> MissingRows:
        """Train rows (those a run sends to the teacher) that lack one of ``names`` or hold null
        there. The rows are read only when the upload counted a missing value in those fields."""
        from jobs.engine.trainsets import lacks_fields

        names = list(dict.fromkeys(names))
        counted = {f["name"]: f.get("missing") for f in self.fields}
        missing = MissingRows(fields=names)
        if all(counted.get(name) == 0 for name in names):
            return missing
        rows = self.rows.filter(split=TrainsetRow.Split.TRAIN).order_by("index")
        for index, source_number, data in rows.values_list(
            "index", "source_number", "data"
        ).iterator(chunk_size=2000):
            if lacks_fields(data, names):
                missing.count += 1
                if len(missing.places) < shown:
                    missing.places.append(self.place(source_number, index))
        return missing

    def resplit(self, dev_ratio: float, seed: int) -> None:
        """Assign every row to train or dev, reproducibly from (dev_ratio, seed).

        Refused (ValueError) once a run has used the trainset: its traces name rows by index and
        split, so the split is fixed from then on."""
        self.check_split(seed)
        with transaction.atomic():
            Trainset.objects.select_for_update().filter(pk=self.pk).first()  # runs wait for it
            if runs := self.runs.count():
                raise ValueError(
                    f"{runs} run(s) used this trainset, so its split is fixed: their train and "
                    "dev rows must stay as they were. Upload the file again to split it "
                    "differently."
                )
            self._assign_split(dev_ratio, seed)

    def _assign_split(self, dev_ratio: float, seed: int) -> None:
        from jobs.engine.trainsets import split_indices

        indices = list(self.rows.order_by("index").values_list("index", flat=True))
        train_idx, dev_idx = split_indices(len(indices), dev_ratio=dev_ratio, seed=seed)
        dev = {indices[i] for i in dev_idx}
        self.rows.update(split=TrainsetRow.Split.TRAIN)
        for start in range(0, len(dev), 1000):
            chunk = sorted(dev)[start : start + 1000]
            self.rows.filter(index__in=chunk).update(split=TrainsetRow.Split.DEV)
        self.dev_ratio, self.split_seed = dev_ratio, seed
        self.save(update_fields=["dev_ratio", "split_seed"])


SPLIT_SEED_MIN, SPLIT_SEED_MAX = -(2**31), 2**31 - 1


@dataclass
class MissingRows:
    """Rows that lack one of ``fields`` (or hold null there): how many, and the first places."""

    fields: list[str]
    count: int = 0
    places: list[str] = field(default_factory=list)  # "line 5" (JSONL) / "row 4" (CSV)

    def __str__(self) -> str:
        more = ", …" if self.count > len(self.places) else ""
        return (
            f"{self.count} train row(s) lack a value for {' or '.join(self.fields)} (missing or "
            f"null): {', '.join(self.places)}{more}"
        )


class TrainsetRow(models.Model):
    class Split(models.TextChoices):
        TRAIN = "train"
        DEV = "dev"

    trainset = models.ForeignKey(Trainset, on_delete=models.CASCADE, related_name="rows")
    index = models.PositiveIntegerField()
    data = models.JSONField()
    split = models.CharField(max_length=8, choices=Split, default=Split.TRAIN)
    # The number the upload's errors would name this row by: its line (JSONL) or row (CSV).
    source_number = models.PositiveIntegerField(null=True, blank=True)

    class Meta:
        ordering = ["trainset", "index"]
        constraints = [
            models.UniqueConstraint(fields=["trainset", "index"], name="unique_row_index")
        ]
        indexes = [models.Index(fields=["trainset", "split", "index"], name="row_split_idx")]

    def __str__(self) -> str:
        return f"{self.trainset} #{self.index}"


class Program(models.Model):
    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="programs")
    name = models.CharField(max_length=200)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [
            models.UniqueConstraint(fields=["project", "name"], name="unique_program_name")
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def latest_version(self) -> ProgramVersion | None:
        return self.versions.order_by("-version").first()


class ProgramVersion(models.Model):
    program = models.ForeignKey(Program, on_delete=models.CASCADE, related_name="versions")
    version = models.PositiveIntegerField()
    spec = models.JSONField()  # ProgramSpec.to_dict()
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["program", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["program", "version"], name="unique_program_version")
        ]

    def __str__(self) -> str:
        return f"{self.program} v{self.version}"

    def to_spec(self) -> ProgramSpec:
        from jobs.engine.programs import parse_program_spec

        return parse_program_spec(self.spec)


class Status(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


class QueuedWork(models.Model):
    """A row that an RQ job works on. The row, not Redis, is the record of its state."""

    Status = Status
    ACTIVE = frozenset({Status.QUEUED, Status.RUNNING})
    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})
    RETRYABLE = frozenset({Status.FAILED, Status.CANCELLED})

    status = models.CharField(max_length=16, choices=Status, default=Status.QUEUED)
    rq_job_id = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    cancel_requested = models.BooleanField(default=False)
    cancel_requested_at = models.DateTimeField(
        null=True, blank=True
    )  # starts the hard-stop grace period
    error = models.TextField(blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(auto_now_add=True)
    started = models.DateTimeField(null=True, blank=True)
    finished = models.DateTimeField(null=True, blank=True)
    updated = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True

    @property
    def is_terminal(self) -> bool:
        return self.status in self.TERMINAL

    @property
    def is_active(self) -> bool:
        return self.status in self.ACTIVE

    @property
    def can_retry(self) -> bool:
        return self.status in self.RETRYABLE

    def _transition(self, from_states: frozenset[str] | set[str], **changes: Any) -> bool:
        """One conditional UPDATE; on success the instance reflects the change."""
        changes["updated"] = now()
        qs = type(self)._default_manager.filter(pk=self.pk, status__in=from_states)
        if qs.update(**changes) != 1:
            return False
        for name, value in changes.items():
            setattr(self, name, value)
        return True

    def mark_running(self, **changes: Any) -> bool:
        """Claim a queued row. False if it was cancelled or another worker got there first."""
        return self._transition({Status.QUEUED}, status=Status.RUNNING, started=now(), **changes)

    def mark_finished(self, status: str, *, error: str = "", **changes: Any) -> bool:
        """End an active row. False if it had already ended (e.g. reconciled or cancelled)."""
        assert status in self.TERMINAL  # a programming error, not user input
        return self._transition(self.ACTIVE, status=status, error=error, finished=now(), **changes)

    def cancel_if_queued(self) -> bool:
        """Cancel at once a row no worker has claimed yet."""
        return self._transition(
            {Status.QUEUED},
            status=Status.CANCELLED,
            cancel_requested=True,
            cancel_requested_at=now(),
            finished=now(),
        )

    def request_cancel(self) -> bool:
        """Ask the worker to stop cooperatively at its next check (the first request counts)."""
        if self.cancel_requested:
            return self.is_active
        return self._transition(self.ACTIVE, cancel_requested=True, cancel_requested_at=now())

    def reset_for_retry(self, **changes: Any) -> bool:
        """Back to queued, under a new RQ job id, from failed or cancelled only."""
        return self._transition(
            self.RETRYABLE,
            **changes,
            status=Status.QUEUED,
            rq_job_id=uuid.uuid4(),
            cancel_requested=False,
            cancel_requested_at=None,
            error="",
            started=None,
            finished=None,
        )

    def stop_requested(self) -> bool:
        """Read from the database: the worker's should_stop()."""
        return type(self)._default_manager.filter(pk=self.pk, cancel_requested=True).exists()


class TrainsetImport(QueuedWork):
    """A large upload validated and imported by a worker (jobs/imports.py). The row is the record:
    when it ends, its trainset is ready or failed and the stored file is gone."""

    trainset = models.OneToOneField(
        Trainset, on_delete=models.CASCADE, related_name="background_import"
    )
    path = models.CharField(max_length=1000)  # the stored upload, under BFT_ARTIFACTS_DIR/uploads
    skip_bad_rows = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Import of trainset {self.trainset_id} ({self.status})"


class BootstrapRun(QueuedWork):
    """The teacher program run over a trainset; each example's result is a Trace."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="runs")
    trainset = models.ForeignKey(Trainset, on_delete=models.PROTECT, related_name="runs")
    program_version = models.ForeignKey(
        ProgramVersion, on_delete=models.PROTECT, related_name="runs"
    )
    teacher = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="teacher_runs"
    )
    metric = models.JSONField()  # MetricSpec.to_dict()
    config = models.JSONField(default=dict)  # BootstrapConfig.to_dict()
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    passed = models.PositiveIntegerField(default=0)
    failed = models.PositiveIntegerField(default=0)
    errored = models.PositiveIntegerField(default=0)
    lm_calls = models.PositiveIntegerField(default=0)
    tokens = models.PositiveBigIntegerField(default=0)
    # Train rows left out because they lack a program input or the metric's field (or hold null
    # there): never sent to the teacher (services.bootstrap_inputs).
    skipped = models.PositiveIntegerField(default=0)
    # Review rule: a trace counts as approved once this many reviewers approve it (jobs/review.py).
    required_approvals = models.PositiveSmallIntegerField(default=1)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status"], name="run_status_idx")]

    def __str__(self) -> str:
        return f"Run {self.pk} ({self.status})"

    @property
    def percent(self) -> int | None:
        if not self.total:
            return None
        return min(100, round(100 * self.done / self.total))

    def metric_spec(self) -> MetricSpec:
        from jobs.engine.types import MetricSpec

        return MetricSpec.from_dict(self.metric)

    def bootstrap_config(self) -> BootstrapConfig:
        from jobs.engine.types import BootstrapConfig

        return BootstrapConfig.from_dict(self.config)

    @property
    def teacher_temperature(self) -> float:
        """What the teacher sampled at: this run's setting, else the model's own."""
        temperature = self.bootstrap_config().temperature
        return self.teacher.temperature if temperature is None else temperature


class TraceQuerySet(models.QuerySet["Trace"]):
    def approved(self) -> TraceQuerySet:
        return self.filter(review_state=Trace.ReviewState.APPROVED)

    def passing(self) -> TraceQuerySet:
        return self.filter(passed=True, parsed=True)

    def parsed(self) -> TraceQuerySet:
        return self.filter(parsed=True)

    def for_selection(self, selection: str) -> TraceQuerySet:
        """The traces a fine-tune trains on: approved, passing, or all parsed (rejected never)."""
        if selection == FinetuneJob.Selection.APPROVED:
            return self.approved().parsed()
        not_rejected = self.exclude(review_state=Trace.ReviewState.REJECTED)
        if selection == FinetuneJob.Selection.PASSING:
            return not_rejected.passing()
        if selection == FinetuneJob.Selection.ALL:
            return not_rejected.parsed()
        raise ValueError(f"unknown trace selection {selection!r}")


class Trace(models.Model):
    """One bootstrapped example: the teacher's record of it, its score, and its review."""

    class ReviewState(models.TextChoices):
        UNREVIEWED = "unreviewed"
        APPROVED = "approved"
        REJECTED = "rejected"

    run = models.ForeignKey(BootstrapRun, on_delete=models.CASCADE, related_name="traces")
    example_index = models.PositiveIntegerField()
    split = models.CharField(max_length=8, default="train")
    inputs = models.JSONField(default=dict)
    labels = models.JSONField(default=dict)
    outputs = models.JSONField(default=dict)
    # Per predictor: {"predictor", "signature": {...}, "inputs", "outputs", "messages"}
    calls = models.JSONField(default=list)
    score = models.FloatField(null=True, blank=True)
    passed = models.BooleanField(default=False)
    parsed = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    review_state = models.CharField(
        max_length=16, choices=ReviewState, default=ReviewState.UNREVIEWED
    )
    edited_outputs = models.JSONField(null=True, blank=True)
    edited = models.BooleanField(
        default=False
    )  # edited_outputs is not null (indexed; jobs/review.py)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    # Review workflow (jobs/review.py): the state above is recomputed from TraceDecision rows.
    approvals = models.PositiveSmallIntegerField(default=0)
    assigned_to = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    lm_calls = models.PositiveIntegerField(default=0)
    tokens = models.PositiveIntegerField(default=0)
    elapsed_s = models.FloatField(default=0.0)
    created = models.DateTimeField(auto_now_add=True)

    objects = TraceQuerySet.as_manager()

    class Meta:
        ordering = ["run", "example_index"]
        constraints = [
            models.UniqueConstraint(fields=["run", "example_index"], name="unique_trace_example")
        ]
        indexes = [
            models.Index(fields=["run", "passed"], name="trace_passed_idx"),
            models.Index(fields=["run", "review_state", "example_index"], name="trace_review_idx"),
            models.Index(fields=["run", "score"], name="trace_score_idx"),
            models.Index(
                fields=["run", "assigned_to", "review_state", "example_index"],
                name="trace_assigned_idx",
            ),
            # Covers the review queue's counts, filters, histogram and page ids without reading the
            # rows (on SQLite a row is ≈ 3 KB of JSON: a scan reads the whole table).
            models.Index(
                fields=[
                    "run",
                    "review_state",
                    "parsed",
                    "passed",
                    "edited",
                    "score",
                    "assigned_to",
                    "example_index",
                ],
                name="trace_review_cover_idx",
            ),
        ]

    def __str__(self) -> str:
        return f"Trace {self.example_index} of run {self.run_id}"

    def as_record(self) -> dict[str, Any]:
        """The engine's trace dict (the keys of the on_trace record)."""
        return {
            "example_index": self.example_index,
            "inputs": self.inputs,
            "labels": self.labels,
            "outputs": self.outputs,
            "calls": self.calls,
            "score": self.score,
            "passed": self.passed,
            "parsed": self.parsed,
            "error": self.error,
            "lm_calls": self.lm_calls,
            "tokens": self.tokens,
            "elapsed_s": self.elapsed_s,
        }


class FinetuneJob(QueuedWork):
    """One LoRA fine-tune of a student LM on a selection of a run's traces."""

    class Selection(models.TextChoices):
        APPROVED = "approved"
        PASSING = "passing", "passing (passed and parsed)"
        ALL = "all", "all parsed"

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="finetune_jobs")
    run = models.ForeignKey(BootstrapRun, on_delete=models.PROTECT, related_name="finetune_jobs")
    student = models.ForeignKey(
        LanguageModel, on_delete=models.PROTECT, related_name="student_jobs"
    )
    config = models.JSONField(default=dict)  # FinetuneConfig.to_dict()
    selection = models.CharField(max_length=16, choices=Selection, default=Selection.APPROVED)
    # The frozen traces (and their decisions) this job trains on; null only for jobs made before sets.
    trace_set = models.ForeignKey(
        "TraceSet", on_delete=models.PROTECT, null=True, blank=True, related_name="finetune_jobs"
    )
    multitask = models.BooleanField(default=True)
    exclude_demos = models.BooleanField(default=True)
    step = models.PositiveIntegerField(default=0)
    total_steps = models.PositiveIntegerField(null=True, blank=True)
    # The newest checkpoint the worker reported on disk: a resume starts there, not at `step`.
    checkpoint_step = models.PositiveIntegerField(default=0)
    epoch = models.FloatField(null=True, blank=True)
    last_loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    eta_s = models.FloatField(null=True, blank=True)
    train_rows = models.PositiveIntegerField(default=0)
    log_tail = models.TextField(blank=True)
    output_model_id = models.CharField(max_length=500, blank=True)
    output_dir = models.CharField(max_length=1000, blank=True)
    worker_name = models.CharField(max_length=200, blank=True)
    device = models.CharField(max_length=32, blank=True)

    class Meta:
        ordering = ["-created"]
        indexes = [models.Index(fields=["status"], name="job_status_idx")]

    def __str__(self) -> str:
        return f"Fine-tune {self.pk} ({self.status})"

    @property
    def percent(self) -> int | None:
        if not self.total_steps:
            return None
        return min(100, round(100 * self.step / self.total_steps))

    def reset_for_retry(self, **changes: Any) -> bool:
        """The step counter goes back to the checkpoint the retry resumes from, so it never jumps."""
        return super().reset_for_retry(step=self.checkpoint_step, **changes)

    def finetune_config(self) -> FinetuneConfig:
        from jobs.engine.types import FinetuneConfig

        return FinetuneConfig.from_dict(self.config)


class FinetuneMetric(models.Model):
    """One optimizer step's numbers, for the loss chart."""

    job = models.ForeignKey(FinetuneJob, on_delete=models.CASCADE, related_name="metrics")
    step = models.PositiveIntegerField()
    loss = models.FloatField(null=True, blank=True)
    learning_rate = models.FloatField(null=True, blank=True)
    tokens_per_s = models.FloatField(null=True, blank=True)
    created = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["job", "step"]
        constraints = [models.UniqueConstraint(fields=["job", "step"], name="unique_metric_step")]

    def __str__(self) -> str:
        return f"job {self.job_id} step {self.step}"


# --- review (jobs/review.py) -------------------------------------------------------------------


class TraceDecision(models.Model):
    """One reviewer action on a trace. Rows are only ever inserted: the history is the record,
    and the trace's review_state / approvals / edited_outputs are recomputed from it."""

    class Verdict(models.TextChoices):
        APPROVE = "approve"
        REJECT = "reject"
        EDIT = "edit"
        COMMENT = "comment"

    VOTES = (Verdict.APPROVE, Verdict.REJECT)

    run = models.ForeignKey(BootstrapRun, on_delete=models.CASCADE, related_name="decisions")
    trace = models.ForeignKey(Trace, on_delete=models.CASCADE, related_name="decisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=8, choices=Verdict)
    comment = models.TextField(blank=True)
    edited_outputs = models.JSONField(null=True, blank=True)
    batch = models.UUIDField(null=True, blank=True, db_index=True)  # one bulk action's rows
    created = models.DateTimeField(default=now)

    class Meta:
        ordering = ["trace", "pk"]
        indexes = [
            models.Index(fields=["trace", "verdict", "user"], name="decision_vote_idx"),
            models.Index(fields=["run", "user", "verdict"], name="decision_reviewer_idx"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.verdict} trace {self.trace_id}"


class TraceSet(models.Model):
    """A frozen, versioned selection of a run's traces, with each trace's decision at freeze time."""

    run = models.ForeignKey(BootstrapRun, on_delete=models.CASCADE, related_name="trace_sets")
    version = models.PositiveIntegerField()
    name = models.CharField(max_length=200)
    rule = models.JSONField(
        default=dict
    )  # how the traces were chosen, e.g. {"selection": "approved"}
    trace_count = models.PositiveIntegerField(default=0)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created = models.DateTimeField(default=now)

    class Meta:
        ordering = ["run", "-version"]
        constraints = [
            models.UniqueConstraint(fields=["run", "version"], name="unique_trace_set_version")
        ]

    def __str__(self) -> str:
        return f"{self.name} v{self.version} ({self.trace_count} traces)"


class TraceSetItem(models.Model):
    """One trace of a frozen set, as it was decided when the set was frozen."""

    trace_set = models.ForeignKey(TraceSet, on_delete=models.CASCADE, related_name="items")
    trace = models.ForeignKey(Trace, on_delete=models.RESTRICT, related_name="+")
    example_index = models.PositiveIntegerField()
    review_state = models.CharField(max_length=16, choices=Trace.ReviewState)
    approvals = models.PositiveSmallIntegerField(default=0)
    edited_outputs = models.JSONField(null=True, blank=True)
    reviewed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    reviewed_at = models.DateTimeField(null=True, blank=True)
    last_decision = models.ForeignKey(
        TraceDecision, on_delete=models.RESTRICT, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["trace_set", "example_index"]
        constraints = [
            models.UniqueConstraint(fields=["trace_set", "trace"], name="unique_trace_set_item")
        ]

    def __str__(self) -> str:
        return f"{self.trace_set} #{self.example_index}"
