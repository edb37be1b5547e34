"""The pages' forms, filled in from a command's options: ``distill`` queues its run and its
fine-tune through the same forms as the web (their ``run_options()`` and ``job_options()``), so
every rule, limit and default is the pages'; a form's error names the command's option."""

from __future__ import annotations

from typing import Any, TypeVar

from django import forms
from django.core.exceptions import NON_FIELD_ERRORS

from jobs.engine.types import FinetuneConfig, MetricSpec
from jobs.forms.finetunes import FINETUNE_CONFIG_FIELDS
from jobs.forms.runs import BootstrapRunForm
from jobs.models import LanguageModel, ProgramVersion, Trainset

FormT = TypeVar("FormT", bound=forms.BaseForm)

# The CLI option of each form field it fills (a form's error names the option to change).
RUN_FORM_OPTIONS = {
    "trainset": "--trainset",
    "program_version": "--program",
    "teacher": "--teacher",
    "metric": "--metric",
    "metric_field": "--metric",
    "threshold": "--metric",
    "pattern": "--metric",
    "num_threads": "--threads",
    "num_demos": "--demos",
    "limit": "--limit",
    "temperature": "--temperature",
    "demo_strategy": "--demo-strategy",
    "retries": "--retries",
    "retry_temperature": "--retry-temperature",
    "smoke_size": "--smoke-size",
}
FINETUNE_FORM_OPTIONS = {
    "student": "--student",
    "epochs": "--epochs",
    "learning_rate": "--lr",
    "batch_size": "--batch-size",
    "lora_r": "--lora-r",
    "lora_alpha": "--lora-alpha",
    "max_label_share": "--max-label-share",
}


def run_form_data(
    options: dict[str, Any],
    *,
    trainset: Trainset,
    program_version: ProgramVersion,
    teacher: LanguageModel,
    metric: MetricSpec,
) -> dict[str, Any]:
    """What the bootstrap run form is given for these options (the web form's values for the
    rest)."""
    data = {
        "trainset": trainset.pk,
        "program_version": program_version.pk,
        "teacher": teacher.pk,
        "metric": metric.name,
        "metric_field": metric.field,
        "threshold": metric.threshold,
        **metric.options,
        "num_threads": options["threads"],
        "num_demos": options["demos"],
        "demo_seed": BootstrapRunForm.base_fields["demo_seed"].initial,
        "limit": options["limit"],
        "temperature": options["temperature"],
        "demo_strategy": options["demo_strategy"],
        "retries": options["retries"],
        "retry_temperature": options["retry_temperature"],
        "smoke_size": options["smoke_size"],
    }
    return {name: value for name, value in data.items() if value is not None}


def finetune_form_data(
    config: FinetuneConfig,
    *,
    student: LanguageModel,
    selection: str,
    max_label_share: float | None,
    evaluate_when_done: bool,
) -> dict[str, Any]:
    """What the fine-tune form is given: ``config``'s knobs and the options distill fixes."""
    data: dict[str, Any] = {
        "student": student.pk,
        "selection": selection,
        "multitask": True,
        "exclude_demos": True,
        "evaluate_when_done": evaluate_when_done,
        "max_label_share": max_label_share,
    }
    for field in FINETUNE_CONFIG_FIELDS:
        value = getattr(config, field.name)
        data[field.name] = ", ".join(value) if isinstance(value, tuple) else value
    return {name: value for name, value in data.items() if value is not None}


def valid_form(form: FormT, option_names: dict[str, str]) -> FormT:
    """``form`` once it is valid; ValueError naming the option of each field at fault."""
    if form.is_valid():
        return form
    problems: list[str] = []
    for name, messages in form.errors.items():
        where = "" if name == NON_FIELD_ERRORS else option_names.get(name, f"--{name}")
        problems += [f"{where}: {message}" if where else str(message) for message in messages]
    raise ValueError("\n".join(problems))
