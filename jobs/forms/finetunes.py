"""The fine-tune form: every FinetuneConfig knob, with its help text."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from django import forms

from jobs.engine.training_plan import AUTO_MAX_EPOCHS, AUTO_MIN_EPOCHS
from jobs.engine.types import FinetuneConfig
from jobs.forms.fields import field_of
from jobs.models import FinetuneJob, LanguageModel, TraceSet
from jobs.services import trace_sets
from jobs.values import INT32_MAX

FINETUNE_HELP: dict[str, str] = {
    "epochs": "Passes over the training rows. Empty: auto, as many as “Min steps” needs "
    f"({AUTO_MIN_EPOCHS} to {AUTO_MAX_EPOCHS}).",
    "min_steps": "With epochs empty: at least this many optimizer steps (a small model learns "
    "the answer format from repeated updates).",
    "max_steps": "Stop after this many optimizer steps; empty: the epochs decide.",
    "learning_rate": "Peak learning rate of the LoRA weights.",
    "warmup_ratio": "Share of steps spent warming the learning rate up.",
    "weight_decay": "AdamW weight decay.",
    "batch_size": "Conversations per micro-batch.",
    "gradient_accumulation_steps": "Micro-batches per optimizer step.",
    "max_grad_norm": "Clip the gradients' global norm (0: off).",
    "max_seq_length": "Tokens per row; longer rows are truncated (and reported).",
    "lora_r": "LoRA rank.",
    "lora_alpha": "LoRA scaling (alpha / r multiplies the update).",
    "lora_dropout": "Dropout on the LoRA path.",
    "target_modules": "Comma-separated module names that get LoRA adapters.",
    "bf16": "bf16 autocast (CUDA, or CPU where supported).",
    "seed": "Random seed for shuffling and initialisation.",
    "checkpoint_every_steps": "Save a resumable checkpoint this often (and at the end).",
}


FINETUNE_LABELS = {
    "lora_r": "LoRA r",
    "lora_alpha": "LoRA alpha",
    "lora_dropout": "LoRA dropout",
    "bf16": "bf16",
}


def _finetune_field(f: dataclasses.Field[Any], default: Any) -> forms.Field:
    help_text = FINETUNE_HELP.get(f.name, "")
    label = FINETUNE_LABELS.get(f.name, f.name.replace("_", " ").capitalize())
    if f.name == "target_modules":
        return forms.CharField(initial=", ".join(default), help_text=help_text, label=label)
    if isinstance(default, bool):
        return forms.BooleanField(initial=default, required=False, help_text=help_text, label=label)
    if isinstance(default, float):
        return forms.FloatField(
            initial=default,
            min_value=0.0,
            help_text=help_text,
            label=label,
            widget=forms.NumberInput(attrs={"step": "any"}),
        )
    if isinstance(default, int) or default is None:
        return forms.IntegerField(
            initial=default,
            min_value=0 if f.name == "seed" else 1,
            max_value=INT32_MAX,
            required=default is not None,
            help_text=help_text,
            label=label,
        )
    return forms.CharField(initial=default, help_text=help_text, label=label)


FINETUNE_CONFIG_FIELDS = [f for f in dataclasses.fields(FinetuneConfig) if f.name != "base_model"]


class FinetuneForm(forms.Form):
    # The querysets are the run's project's models and the run's trace sets, set in __init__.
    student: forms.ModelChoiceField[LanguageModel] = forms.ModelChoiceField(
        queryset=None,
        empty_label=None,
        help_text="Only fine-tunable local models are listed.",
    )
    selection = forms.ChoiceField(
        choices=(),
        help_text="Which traces become training rows (rejected traces never do).",
    )
    multitask = forms.BooleanField(
        initial=True,
        required=False,
        help_text="One training set for all of the program's predictors.",
    )
    exclude_demos = forms.BooleanField(
        initial=True, required=False, help_text="Train without the teacher's demos in the prompt."
    )
    evaluate_when_done = forms.BooleanField(
        initial=True,
        required=False,
        label="Evaluate on the dev split when done",
        help_text="When it succeeds, the teacher (as the run prompted it), the base student and the "
        "new student answer the run's dev rows, and the job page shows the verdict.",
    )
    trace_set: forms.ModelChoiceField[TraceSet] = forms.ModelChoiceField(
        queryset=None,
        required=False,
        empty_label="Freeze the selection above now (a new trace set)",
        help_text="Or train on a set frozen earlier on the review page (its decisions and edits as frozen).",
    )
    max_label_share = forms.FloatField(
        required=False,
        initial=trace_sets.DEFAULT_MAX_LABEL_SHARE,
        min_value=0.01,
        max_value=1.0,
        label="Cap one label's share",
        widget=forms.NumberInput(attrs={"step": "0.05", "placeholder": "no cap"}),
        help_text="E.g. 0.5: no value of the metric field is more than half of the rows; the "
        "biggest labels' excess traces are left out (seeded) when the selection is frozen. "
        f"Empty: no cap, a warning over {trace_sets.COLLAPSE_SHARE:.0%}.",
    )

    def __init__(self, *args: Any, run: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.run = run
        # Every model of the project is offered to the validator, so a non-fine-tunable student
        # posted by hand is refused with a reason rather than "not one of the choices".
        field_of(self, "student", forms.ModelChoiceField).queryset = LanguageModel.objects.filter(
            project=run.project
        )
        self.student_choices = LanguageModel.objects.filter(
            project=run.project, kind=LanguageModel.Kind.LOCAL, fine_tunable=True
        )
        field_of(self, "selection", forms.ChoiceField).choices = FinetuneJob.Selection.choices
        field_of(self, "trace_set", forms.ModelChoiceField).queryset = run.trace_sets.order_by(
            "-version"
        )
        defaults = FinetuneConfig(base_model="-")
        for f in FINETUNE_CONFIG_FIELDS:
            self.fields[f.name] = _finetune_field(f, getattr(defaults, f.name))

    def config_fields(self) -> list[forms.BoundField]:
        return [self[f.name] for f in FINETUNE_CONFIG_FIELDS]

    def preview_options(self) -> dict[str, Any]:
        """trace_sets.preview's keyword arguments (but run) from the form as filled in so far:
        each field that validated, the initial value or the default for the others."""
        defaults = FinetuneConfig(base_model="-")
        if not self.is_bound:
            return {
                "selection": self["selection"].initial or FinetuneJob.Selection.APPROVED,
                "trace_set": None,
                "multitask": True,
                "exclude_demos": True,
                "config": defaults,
                "max_label_share": trace_sets.DEFAULT_MAX_LABEL_SHARE,
            }
        self.is_valid()

        def valid(name: str, default: Any = None) -> Any:
            if name in self.errors or name not in self.cleaned_data:
                return default
            return self.cleaned_data[name]

        knobs = {f.name: valid(f.name, getattr(defaults, f.name)) for f in FINETUNE_CONFIG_FIELDS}
        return {
            "selection": valid("selection") or FinetuneJob.Selection.APPROVED,
            "trace_set": valid("trace_set"),
            "multitask": bool(valid("multitask")),
            "exclude_demos": bool(valid("exclude_demos")),
            "config": dataclasses.replace(defaults, **knobs),
            "max_label_share": valid("max_label_share"),
        }

    def job_options(self) -> dict[str, Any]:
        """The valid form as finetunes.create_finetune_job's keyword arguments (but run and user)."""
        data = self.cleaned_data
        return {
            "student": data["student"],
            "config": data["config"],
            "selection": data["selection"],
            "multitask": data["multitask"],
            "exclude_demos": data["exclude_demos"],
            "trace_set": data.get("trace_set"),
            "max_label_share": data.get("max_label_share"),
            "evaluate_when_done": data["evaluate_when_done"],
        }

    def clean_student(self) -> LanguageModel:
        student = self.cleaned_data["student"]
        if not (student.kind == LanguageModel.Kind.LOCAL and student.fine_tunable):
            raise forms.ValidationError(
                f"{student.name} is not fine-tunable: only local models marked fine-tunable can be students."
            )
        return student

    def clean_target_modules(self) -> tuple[str, ...]:
        names = tuple(
            n.strip() for n in self.cleaned_data["target_modules"].split(",") if n.strip()
        )
        if not names:
            raise forms.ValidationError("Name at least one module.")
        for name in names:
            if not re.fullmatch(r"[A-Za-z0-9_.]+", name):
                raise forms.ValidationError(f"“{name}” is not a module name.")
        return names

    def clean_lora_dropout(self) -> float:
        value = self.cleaned_data["lora_dropout"]
        if value >= 1.0:
            raise forms.ValidationError("Dropout must be below 1.")
        return value

    def clean_warmup_ratio(self) -> float:
        value = self.cleaned_data["warmup_ratio"]
        if value >= 1.0:
            raise forms.ValidationError("Warmup ratio must be below 1.")
        return value

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        student, selection = data.get("student"), data.get("selection")
        if student is None or not selection or self.errors:
            return data
        trace_set = data.get("trace_set")
        count = (
            trace_set.trace_count if trace_set else self.run.traces.for_selection(selection).count()
        )
        data["row_count"] = count
        if count == 0:
            raise forms.ValidationError(
                f"The “{selection}” selection has no traces yet: approve or bootstrap some first."
            )
        cap = data.get("max_label_share")
        if cap is not None and trace_set is not None:
            self.add_error(
                "max_label_share",
                "A frozen set keeps its traces: leave the cap empty, or freeze the selection now.",
            )
            return data
        if cap is not None:
            try:
                trace_sets.selection_balance(self.run, selection, max_share=cap)
            except ValueError as e:
                self.add_error("max_label_share", str(e))
                return data
        values = {f.name: data[f.name] for f in FINETUNE_CONFIG_FIELDS}
        data["config"] = FinetuneConfig(base_model=student.model_name, **values)
        return data
