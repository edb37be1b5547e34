"""Uploaded trainsets, their rows with a seeded train/dev split, and background imports."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings
from django.db import models, transaction

from jobs.engine.trainsets import lacks_fields, place_name, split_indices
from jobs.models.projects import Project
from jobs.models.queued_work import QueuedWork, WorkSpec


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
        if source_number is None:  # imported before rows kept their place
            return f"row #{index}"
        return place_name(self.fmt, source_number)

    def rows_missing(self, names: Iterable[str], *, shown: int = 5) -> MissingRows:
        """Train rows (those a run sends to the teacher) that lack one of ``names`` or hold null
        there. The rows are read only when the upload counted a missing value in those fields."""
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


class TrainsetImport(QueuedWork):
    """A large upload validated and imported by a worker (jobs/work/trainsets.py). The row is
    the record: when it ends, its trainset is ready or failed and the stored file is gone."""

    WORK = WorkSpec("import", "default", "jobs.tasks.run_trainset_import", "BFT_IMPORT_TIMEOUT_S")

    trainset = models.OneToOneField(
        Trainset, on_delete=models.CASCADE, related_name="background_import"
    )
    path = models.CharField(max_length=1000)  # the stored upload, under BFT_ARTIFACTS_DIR/uploads
    skip_bad_rows = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created"]

    def __str__(self) -> str:
        return f"Import of trainset {self.trainset_id} ({self.status})"

    def on_ended(self) -> None:
        """Its trainset, if still importing, fails with the import's reason; the file goes."""
        self.refresh_from_db(fields=["status", "error"])
        if self.is_active:
            return
        reason = self.error or f"The import ended as {self.status} without importing the rows."
        Trainset.objects.filter(pk=self.trainset_id, status=Trainset.Status.IMPORTING).update(
            status=Trainset.Status.FAILED, error=reason
        )
        Path(self.path).unlink(missing_ok=True)

    @classmethod
    def settle_stragglers(cls) -> None:
        """Every trainset still "importing" whose import has ended fails; so does one without an
        import row (queued by a version that kept no row, so nothing would end it)."""
        ended = cls.objects.filter(trainset__status=Trainset.Status.IMPORTING).exclude(
            status__in=cls.ACTIVE
        )
        for work in ended:
            work.on_ended()
        Trainset.objects.filter(
            status=Trainset.Status.IMPORTING, background_import__isnull=True
        ).update(
            status=Trainset.Status.FAILED,
            error="The import was interrupted; nothing was imported.",
        )
