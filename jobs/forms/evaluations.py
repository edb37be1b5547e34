"""The evaluation form: a program on a trainset's rows, a metric, and up to four candidates (a
model, its role in the comparison, and how it is prompted)."""

from __future__ import annotations

from typing import Any

from django import forms

from jobs.engine.metrics import METRICS
from jobs.forms.fields import field_of, offer_program_versions
from jobs.forms.runs import MetricForm, ProgramVersionChoiceField
from jobs.models import (
    BootstrapRun,
    Evaluation,
    EvaluationCandidate,
    LanguageModel,
    Project,
    Trainset,
)
from jobs.services import evaluations, programs
from jobs.services.evaluations import CandidateChoice
from jobs.services.model_policy import ModelPolicyError, check_model
from jobs.values import INT32_MAX

SLOTS = 4  # candidates the form offers
Role = EvaluationCandidate.Role
Prompting = EvaluationCandidate.Prompting


class RunChoiceField(forms.ModelChoiceField):
    def label_from_instance(self, obj: BootstrapRun) -> str:
        return f"#{obj.pk}: teacher {obj.teacher.name} on {obj.trainset.name}"


class EvaluationForm(MetricForm):
    # The querysets are the project's, set in __init__; the candidate slots too.
    program_version = ProgramVersionChoiceField(queryset=None, empty_label=None, label="Program")
    trainset: forms.ModelChoiceField[Trainset] = forms.ModelChoiceField(
        queryset=None, empty_label=None, label="Rows from trainset"
    )
    split = forms.ChoiceField(
        choices=[(v, "all rows" if v == "all" else v) for v in Evaluation.Split.values],
        initial=Evaluation.Split.DEV,
        help_text="dev: the rows held out of bootstrapping and training (an honest score).",
    )
    limit = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=INT32_MAX,
        label="Row limit",
        help_text="Score at most this many rows (the first ones); empty: all of them.",
    )
    run = RunChoiceField(
        queryset=None,
        required=False,
        empty_label="no run",
        help_text="Its teacher's demos and temperature, for a candidate prompted “with the run's "
        "demos”. Choosing one fills the form in from it.",
    )
    num_threads = forms.IntegerField(
        initial=8,
        min_value=1,
        max_value=64,
        label="Threads",
        help_text="Rows answered in parallel.",
    )

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        offer_program_versions(self, project)
        field_of(self, "trainset", forms.ModelChoiceField).queryset = Trainset.objects.filter(
            project=project, status=Trainset.Status.READY
        )
        field_of(self, "run", forms.ModelChoiceField).queryset = BootstrapRun.objects.filter(
            project=project
        ).select_related("teacher", "trainset")
        self.metric_descriptions = METRICS
        self.fields["threshold"].help_text = "A row passes when its score is at least this."
        models = LanguageModel.objects.filter(project=project).order_by("name")
        for i in range(1, SLOTS + 1):
            self.fields[f"model_{i}"] = forms.ModelChoiceField(
                queryset=models, required=False, empty_label="—", label=f"Candidate {i}"
            )
            self.fields[f"role_{i}"] = forms.ChoiceField(
                choices=[(value, label.capitalize()) for value, label in Role.choices],
                initial=Role.MODEL,
                label=f"Role of candidate {i}",
            )
            self.fields[f"prompting_{i}"] = forms.ChoiceField(
                choices=Prompting.choices,
                initial=Prompting.ZERO_SHOT,
                label=f"Prompting of candidate {i}",
            )

    def slots(self) -> list[tuple[forms.BoundField, forms.BoundField, forms.BoundField]]:
        """(model, role, prompting) per candidate slot, for the template."""
        return [
            (self[f"model_{i}"], self[f"role_{i}"], self[f"prompting_{i}"])
            for i in range(1, SLOTS + 1)
        ]

    def evaluation_options(self) -> dict[str, Any]:
        """The valid form as evaluations.create_evaluation's keyword arguments (but project and
        user): the page and the API queue an evaluation alike."""
        data = self.cleaned_data
        return {
            "program_version": data["program_version"],
            "trainset": data["trainset"],
            "metric": data["metric_spec"],
            "candidates": data["candidates"],
            "split": data["split"],
            "run": data.get("run"),
            "limit": data.get("limit"),
            "num_threads": data["num_threads"],
        }

    def clean(self) -> dict[str, Any]:
        """Refuse combinations that cannot work, naming the field at fault."""
        super().clean()
        data = self.cleaned_data
        self._clean_candidates(data)
        trainset, version = data.get("trainset"), data.get("program_version")
        if self.errors or not trainset or not version:
            return data  # the fields' own errors first
        field = data["metric_field"].strip()
        try:
            spec = programs.check_fit(version, trainset, field)
        except programs.Misfit as e:
            self.add_error(e.field, str(e))
            return data
        data["metric_field"] = field
        metric = self.build_metric(data, spec.output_fields)
        if metric is None:
            return data
        rows = evaluations.count_rows(
            trainset=trainset,
            program_version=version,
            metric_field=field,
            split=data["split"],
            limit=data.get("limit"),
        )
        if rows == 0:
            self.add_error(
                "split",
                f"Trainset {trainset.name} has no {data['split']} rows with every field the "
                f"evaluation needs ({', '.join([*spec.input_fields, field])}).",
            )
            return data
        data["metric_spec"] = metric
        data["row_count"] = rows
        return data

    def _clean_candidates(self, data: dict[str, Any]) -> None:
        """The filled slots as data["candidates"] (CandidateChoice), each slot's problems on
        its own fields."""
        candidates = []
        seen: dict[tuple[int, str], int] = {}
        teachers = 0
        for i in range(1, SLOTS + 1):
            model = data.get(f"model_{i}")
            role, prompting = data.get(f"role_{i}"), data.get(f"prompting_{i}")
            if model is None or role is None or prompting is None:
                continue
            if prompting == Prompting.RUN_DEMOS and not data.get("run"):
                self.add_error(
                    f"prompting_{i}",
                    "“With the run's demos” needs a run: choose the run whose teacher it copies.",
                )
            earlier = seen.setdefault((model.pk, prompting), i)
            if earlier != i:
                self.add_error(
                    f"model_{i}",
                    f"Candidate {earlier} is already {model.name}, prompted the same way.",
                )
            if role == Role.TEACHER:
                teachers += 1
                if teachers > 1:
                    self.add_error(
                        f"role_{i}",
                        "Only one candidate can be the teacher: the one the others are compared with.",
                    )
            try:
                check_model(model)
            except ModelPolicyError as e:
                self.add_error(f"model_{i}", str(e))
            candidates.append(CandidateChoice(model=model, role=role, prompting=prompting))
        if not candidates and "model_1" not in self.errors:
            self.add_error("model_1", "Pick at least one model to evaluate.")
        data["candidates"] = candidates
