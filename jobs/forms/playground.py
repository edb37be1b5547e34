"""The playground form: a program version, up to four models, and the program's inputs (typed,
or a trainset row's)."""

from __future__ import annotations

from typing import Any

from django import forms

from jobs.forms.fields import field_of, offer_program_versions
from jobs.forms.runs import ProgramVersionChoiceField
from jobs.models import (
    LanguageModel,
    PlaygroundTry,
    ProgramVersion,
    Project,
    Trainset,
    TrainsetRow,
)
from jobs.models.playground import MAX_MODELS

INPUT_PREFIX = "input__"


class PlaygroundForm(forms.Form):
    program_version = ProgramVersionChoiceField(queryset=None, empty_label=None, label="Program")
    models: forms.ModelMultipleChoiceField[LanguageModel] = forms.ModelMultipleChoiceField(
        queryset=None,
        widget=forms.CheckboxSelectMultiple,
        label="Models",
        help_text=f"Up to {MAX_MODELS}: teacher, base student, fine-tuned students.",
    )
    trainset: forms.ModelChoiceField[Trainset] = forms.ModelChoiceField(
        queryset=None, required=False, label="Or a trainset row: trainset"
    )
    row_index = forms.IntegerField(required=False, min_value=0, label="Row")

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        versions = offer_program_versions(self, project)
        field_of(
            self, "models", forms.ModelMultipleChoiceField
        ).queryset = LanguageModel.objects.filter(project=project)
        field_of(self, "trainset", forms.ModelChoiceField).queryset = Trainset.objects.filter(
            project=project, status=Trainset.Status.READY
        )
        self.version = self._chosen_version(versions)
        self.input_names = list(self.version.to_spec().input_fields) if self.version else []
        for name in self.input_names:
            self.fields[INPUT_PREFIX + name] = forms.CharField(
                required=False, label=name, widget=forms.Textarea(attrs={"rows": 2})
            )

    @staticmethod
    def initial_from(shown: PlaygroundTry | None, program_version: str | None) -> dict[str, Any]:
        """Initial values: the shown try's program, models and typed inputs (to change one thing
        and run again), else the program asked for."""
        if shown is None:
            return {"program_version": program_version}
        initial: dict[str, Any] = {
            "program_version": shown.program_version_id,
            "models": [chosen["pk"] for chosen in shown.chosen],
        }
        if shown.row_id is None:
            initial |= {INPUT_PREFIX + name: value for name, value in shown.inputs.items()}
        return initial

    def _chosen_version(self, versions: Any) -> ProgramVersion | None:
        pk = self.data.get("program_version") or self.initial.get("program_version")
        chosen = versions.filter(pk=pk).first() if str(pk or "").isdigit() else None
        return chosen or versions.order_by("-created").first()

    def input_fields(self) -> list[forms.BoundField]:
        return [self[INPUT_PREFIX + name] for name in self.input_names]

    def clean_models(self) -> Any:
        models = self.cleaned_data["models"]
        if len(models) > MAX_MODELS:
            raise forms.ValidationError(f"Pick at most {MAX_MODELS} models.")
        return models

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        trainset, index = data.get("trainset"), data.get("row_index")
        data["row"] = None
        if trainset is not None and index is not None:
            data["row"] = TrainsetRow.objects.filter(trainset=trainset, index=index).first()
            if data["row"] is None:
                self.add_error("row_index", f"Trainset {trainset.name} has no row {index}.")
        elif trainset is not None or index is not None:
            self.add_error("row_index", "Pick both a trainset and a row, or type the inputs.")
        else:
            missing = [n for n in self.input_names if not data.get(INPUT_PREFIX + n)]
            for name in missing:
                self.add_error(INPUT_PREFIX + name, "Type this input, or pick a trainset row.")
        data["inputs"] = {n: data.get(INPUT_PREFIX + n, "") for n in self.input_names}
        return data
