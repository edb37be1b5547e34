"""The model form (the Models page and the admin): what people type, checked against the
installation's allow-lists (jobs/services/model_policy.py)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from django import forms

from jobs.forms.fields import field_of
from jobs.models import LanguageModel, Project
from jobs.services.model_policy import model_problems

if TYPE_CHECKING:
    from django.contrib.auth.models import User

# What people set on a model, on the Models page and (with its project and origin) in the admin.
MODEL_FIELDS = [
    "name",
    "kind",
    "model_name",
    "api_base",
    "api_key_env",
    "fine_tunable",
    "temperature",
    "max_tokens",
]


class LanguageModelForm(forms.ModelForm):
    class Meta:
        model = LanguageModel
        fields = MODEL_FIELDS
        labels = {
            "model_name": "Model",
            "api_base": "API base URL",
            "api_key_env": "API key environment variable",
            "fine_tunable": "Fine-tunable (local models only)",
        }
        help_texts = {
            "name": "How this project refers to the model, e.g. “teacher-gpt4o-mini”.",
            "kind": "local: runs in the worker with transformers. litellm: any LiteLLM model string.",
            "model_name": (
                "local: “smollm2” (bundled), a Hugging Face directory, a hub id already in the "
                "workers' cache, or a .gguf path. litellm: e.g. “openai/gpt-4o-mini”."
            ),
            "api_base": "Optional, for OpenAI-compatible servers (vLLM, SGLang, Ollama).",
            "api_key_env": (
                "The NAME of the variable that holds the key on the workers, e.g. OPENAI_API_KEY. "
                "Never the key itself: bftweb does not store keys."
            ),
            "max_tokens": "Upper bound on each answer's length.",
        }
        widgets = {"temperature": forms.NumberInput(attrs={"step": "0.1", "min": "0", "max": "2"})}

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        if self.instance.pk and self.instance.in_use:  # what its runs and jobs ran stays true
            for name in ("kind", "model_name"):
                self.fields[name].disabled = True
                self.fields[name].help_text = "Fixed: runs or fine-tunes already used this model."
        field_of(self, "kind", forms.ChoiceField).choices = [
            (LanguageModel.Kind.LOCAL, "local (transformers on a worker; fine-tunable)"),
            (LanguageModel.Kind.LITELLM, "LiteLLM (an API or an OpenAI-compatible server)"),
        ]

    def register(self, user: User) -> LanguageModel:
        """Save the valid form as a new model of its project, registered by ``user``."""
        model = self.save(commit=False)
        model.project = self.project
        model.created_by = user
        model.save()
        return model

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        qs = LanguageModel.objects.filter(project=self.project, name=name)
        if self.instance.pk:
            qs = qs.exclude(pk=self.instance.pk)
        if qs.exists():
            raise forms.ValidationError("This project already has a model with this name.")
        return name

    def clean_model_name(self) -> str:
        value = self.cleaned_data["model_name"].strip()
        if not value:
            raise forms.ValidationError("This field is required.")
        return value

    def clean_api_key_env(self) -> str:
        return self.cleaned_data["api_key_env"].strip()

    def clean_api_base(self) -> str:
        return self.cleaned_data["api_base"].strip()

    def clean_temperature(self) -> float:
        value = self.cleaned_data["temperature"]
        if not 0.0 <= value <= 2.0:
            raise forms.ValidationError("Use a temperature between 0 and 2.")
        return value

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        kind = data.get("kind")
        if kind == LanguageModel.Kind.LITELLM and data.get("fine_tunable"):
            self.add_error("fine_tunable", "Only local models can be fine-tuned here.")
        if kind == LanguageModel.Kind.LOCAL:
            for name in ("api_base", "api_key_env"):
                if data.get(name):
                    self.add_error(name, "Only for litellm models.")
        add_model_policy_errors(self, self.project)
        return data


class LanguageModelAdminForm(forms.ModelForm):
    """The admin's model form: the same allow-lists as the Models page."""

    class Meta:
        model = LanguageModel
        fields = ["project", *MODEL_FIELDS, "source_job", "created_by"]

    def clean(self) -> dict[str, Any]:
        super().clean()
        data = self.cleaned_data
        add_model_policy_errors(self, data.get("project"))
        return data


def add_model_policy_errors(form: forms.BaseForm, project: Project | None) -> None:
    """The installation's allow-lists (jobs/services/model_policy.py), as errors on the fields they concern."""
    data = form.cleaned_data
    if not data.get("kind") or not data.get("model_name") or form.has_error("model_name"):
        return
    problems = model_problems(
        project=project,
        kind=data["kind"],
        model_name=data["model_name"],
        api_base=data.get("api_base") or "",
        api_key_env=data.get("api_key_env") or "",
    )
    for name, message in problems.items():
        if name in form.fields and not form.has_error(name):
            form.add_error(name, message)
