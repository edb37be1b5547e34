"""The bootstrap run form."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings

from jobs.engine.metrics import METRICS, validate_metric_spec
from jobs.engine.types import BootstrapConfig, MetricSpec
from jobs.forms.fields import field_of, offer_program_versions
from jobs.models import LanguageModel, ProgramVersion, Project, Trainset
from jobs.services import programs
from jobs.values import INT32_MAX, INT32_MIN


class ProgramVersionChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: ProgramVersion) -> str:
        return f"{obj.program.name} v{obj.version}"


class TeacherChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: LanguageModel) -> str:
        return f"{obj.name} ({obj.model_name}, temperature {obj.temperature})"


class MetricForm(forms.Form):
    """A built-in metric on one program output: the run form's and the re-score form's fields."""

    metric = forms.ChoiceField(choices=())
    metric_field = forms.CharField(
        max_length=64,
        label="Metric field",
        help_text="The program output compared with the trainset's label.",
    )
    threshold = forms.FloatField(
        initial=1.0,
        min_value=0.0,
        max_value=1.0,
        help_text="A trace passes when its score is at least this.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    tolerance = forms.FloatField(
        required=False, min_value=0.0, help_text="numeric metric only: allowed difference."
    )
    relative = forms.BooleanField(
        required=False, help_text="numeric metric only: tolerance is relative."
    )
    pattern = forms.CharField(
        required=False,
        max_length=500,
        help_text="regex metric only: the prediction must match this.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field_of(self, "metric", forms.ChoiceField).choices = [(m, m) for m in METRICS]

    def build_metric(
        self, data: dict[str, Any], output_fields: tuple[str, ...]
    ) -> MetricSpec | None:
        """The MetricSpec from cleaned ``data``; None with the form's errors added."""
        options: dict[str, Any] = {}
        if data["metric"] == "numeric":
            options = {
                "tolerance": data.get("tolerance") or 0.0,
                "relative": bool(data.get("relative")),
            }
        elif data["metric"] == "regex":
            if not data.get("pattern"):
                self.add_error("pattern", "The regex metric needs a pattern.")
                return None
            options = {"pattern": data["pattern"]}
        metric = MetricSpec(
            name=data["metric"],
            field=data["metric_field"],
            threshold=data["threshold"],
            options=options,
        )
        try:
            validate_metric_spec(metric, output_fields=output_fields)
        except ValueError as e:
            self.add_error(None, f"Metric: {e}")
            return None
        return metric


class BootstrapRunForm(MetricForm):
    # The querysets are the project's, set in __init__.
    trainset: forms.ModelChoiceField[Trainset] = forms.ModelChoiceField(
        queryset=None, empty_label=None
    )
    program_version = ProgramVersionChoiceField(queryset=None, empty_label=None, label="Program")
    teacher = TeacherChoiceField(queryset=None, empty_label=None)
    num_threads = forms.IntegerField(
        initial=16,
        min_value=1,
        max_value=64,
        label="Threads",
        help_text="Examples run in parallel (a local teacher answers them in one batch).",
    )
    limit = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=INT32_MAX,
        label="Example limit",
        help_text="Bootstrap at most this many train examples.",
    )
    num_demos = forms.IntegerField(
        initial=4,
        min_value=0,
        max_value=32,
        label="Labeled demos",
        help_text="Train-split examples shown to the teacher (small models need a few).",
    )
    demo_seed = forms.IntegerField(
        initial=0, min_value=INT32_MIN, max_value=INT32_MAX, label="Demo seed"
    )
    temperature = forms.FloatField(
        required=False,
        min_value=0.0,
        max_value=2.0,
        label="Teacher temperature",
        widget=forms.NumberInput(attrs={"step": "0.1", "placeholder": "the model's own"}),
        help_text="Empty: the teacher model's own setting (Models page).",
    )
    demo_strategy = forms.ChoiceField(
        required=False,
        initial="stratified_search",
        label="Demo choice",
        choices=[
            (
                "stratified_search",
                "measured: every label shown, the best of a few sets on a sample",
            ),
            ("random", "random (as DSPy picks them)"),
        ],
        help_text="Small teachers depend on their demos: measured picks several label-balanced "
        "sets and keeps the one that scores best on a few held train rows (about (sets + 1) × 8 "
        "extra teacher calls).",
    )
    reason_demos = forms.BooleanField(
        required=False,
        label="Reason the demos first",
        help_text="Labeled demos carry no reasoning, and small teachers copy the gap. The teacher "
        "answers each demo first; an answer that passes keeps its reasoning (DSPy's BootstrapFewShot).",
    )
    retries = forms.IntegerField(
        required=False,
        initial=1,
        min_value=0,
        max_value=5,
        label="Retries for failing answers",
        help_text="Best-of-N: an answer that fails the metric is asked again up to this many times "
        "at the retry temperature; the first passing answer is kept, every attempt is recorded.",
    )
    retry_temperature = forms.FloatField(
        required=False,
        initial=0.7,
        min_value=0.0,
        max_value=2.0,
        label="Retry temperature",
        widget=forms.NumberInput(attrs={"step": "0.1"}),
    )
    smoke_size = forms.IntegerField(
        required=False,
        initial=settings.BFT_SMOKE_SIZE,
        min_value=0,
        max_value=1000,
        label="Smoke test size",
        help_text="Bootstrap this many label-balanced examples first, and stop for a look when they "
        "look broken (few pass, most unparsed, or one answer for everything). 0: no smoke test.",
    )
    skip_missing = forms.BooleanField(
        required=False,
        label="Skip rows missing a field",
        help_text="Train rows that lack a program input or the metric field (or hold null there) "
        "are left out and counted as skipped; the teacher never sees them. Unticked, they refuse the run.",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        trainsets = Trainset.objects.filter(project=project, status=Trainset.Status.READY)
        field_of(self, "trainset", forms.ModelChoiceField).queryset = trainsets
        offer_program_versions(self, project)
        teacher = field_of(self, "teacher", forms.ModelChoiceField)
        teacher.queryset = LanguageModel.objects.filter(project=project)
        teacher.help_text = "Max tokens is set per model on the Models page."
        self.metric_descriptions = METRICS

    def run_options(self) -> dict[str, Any]:
        """The valid form as runs.create_bootstrap_run's keyword arguments (but project and
        user): the page and the API queue a run alike."""
        data = self.cleaned_data
        return {
            "trainset": data["trainset"],
            "program_version": data["program_version"],
            "teacher": data["teacher"],
            "metric": data["metric_spec"],
            "config": data["bootstrap_config"],
            "skip_missing": data["skip_missing"],
        }

    def clean(self) -> dict[str, Any]:
        """Refuse combinations that cannot work, with the reason."""
        super().clean()
        data = self.cleaned_data
        # What each field parsed to, before the checks across fields below take a faulted
        # field out of cleaned_data: the estimate reads the form as filled in so far.
        self.parsed = dict(data)
        trainset, version = data.get("trainset"), data.get("program_version")
        if self.errors or not trainset or not version:
            return data  # the fields' own errors first
        field = data["metric_field"].strip()
        try:
            spec = programs.check_fit(version, trainset, field)
        except programs.Misfit as e:
            self.add_error(None if e.field == "program_version" else e.field, str(e))
            return data
        missing = trainset.rows_missing([*spec.input_fields, field])
        if missing.count and not data.get("skip_missing"):
            raise forms.ValidationError(
                f"{missing}. Fix the file and upload it again, or tick “Skip rows missing a field”."
            )
        data["metric_field"] = field
        metric = self.build_metric(data, spec.output_fields)
        if metric is None:
            return data
        data["metric_spec"] = metric
        data["bootstrap_config"] = BootstrapConfig(
            num_threads=data["num_threads"],
            num_demos=data["num_demos"],
            demo_seed=data["demo_seed"],
            limit=data.get("limit"),
            temperature=data.get("temperature"),
            reason_demos=bool(data.get("reason_demos")),
            # A post without the field (an API client, an older page) keeps DSPy's random pick.
            demo_strategy=data.get("demo_strategy") or "random",
            # Absent from a post (an API client, an older page): no retries, no smoke test.
            retries=data.get("retries") or 0,
            retry_temperature=data["retry_temperature"]
            if data.get("retry_temperature") is not None
            else 0.7,
            smoke_size=data.get("smoke_size") or 0,
        )
        return data

    def estimate_options(self) -> dict[str, Any]:
        """runs.estimate's keyword arguments from the form as filled in so far: each field that
        parsed, None or the default for the others. An unbound form counts its initial values,
        so the first figure is the one the page's refresh gives."""
        form = self
        if not self.is_bound:
            data = {name: self[name].value() for name in self.fields}
            form = type(self)(
                {k: v for k, v in data.items() if v is not None}, project=self.project
            )
        form.is_valid()
        parsed = getattr(form, "parsed", form.cleaned_data)
        return {
            "trainset": parsed.get("trainset"),
            "program_version": parsed.get("program_version"),
            "limit": parsed.get("limit"),
            "reason_demos": bool(parsed.get("reason_demos")),
            "num_demos": parsed.get("num_demos"),
            "metric_field": (parsed.get("metric_field") or "").strip(),
            "demo_strategy": parsed.get("demo_strategy") or "random",
            "retries": parsed.get("retries") or 0,
        }


class RescoreForm(MetricForm):
    """Another metric or threshold for a finished run's stored answers (jobs/services/rescoring.py)."""
