"""Forms: parse and validate what people type, return typed values. No queries beyond choices."""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat
from django.utils.text import slugify

from jobs.engine.types import FinetuneConfig
from jobs.memberships import users_visible_to
from jobs.model_policy import model_problems
from jobs.models import LanguageModel, Membership, Project

ROLE_CHOICES = Membership.Role.choices
# A signed 32-bit integer: the range of an IntegerField column (PostgreSQL "integer").
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1


def upload_max_bytes() -> int:
    return int(settings.BFT_UPLOAD_MAX_BYTES)


# --- projects and members ------------------------------------------------------------------


class ProjectForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="A team workspace, e.g. “Support bot”.")

    def clean_name(self) -> str:
        name = self.cleaned_data["name"].strip()
        slug = slugify(name)
        if not slug:
            raise forms.ValidationError("Use at least one letter or digit.")
        if (
            Project.objects.filter(name__iexact=name).exists()
            or Project.objects.filter(slug=slug).exists()
        ):
            raise forms.ValidationError("A project with this name already exists.")
        self.cleaned_data["slug"] = slug
        return name


class MemberAddForm(forms.Form):
    """Adds someone the adding user may know exists (see ``users_visible_to``). Anyone else gets
    the same answer as a name that does not exist, so the form cannot be used to probe names."""

    username = forms.CharField(
        max_length=150,
        help_text="The bftweb username of someone who shares a project with you. "
        "An administrator adds anyone else.",
    )
    role = forms.ChoiceField(choices=ROLE_CHOICES, initial=Membership.Role.VIEWER)

    def __init__(self, *args: Any, project: Project, user: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.project = project
        self.user = user

    def clean_username(self) -> Any:
        username = self.cleaned_data["username"].strip()
        user = users_visible_to(self.user).filter(username=username).first()
        if user is None:
            raise forms.ValidationError(
                f"No user named “{username}” that you can add: you can add people who share "
                "a project with you; an administrator adds anyone else."
            )
        if Membership.objects.filter(project=self.project, user=user).exists():
            raise forms.ValidationError(f"{username} is already a member.")
        return user


class MemberRoleForm(forms.Form):
    role = forms.ChoiceField(choices=ROLE_CHOICES)


# --- models --------------------------------------------------------------------------------


class LanguageModelForm(forms.ModelForm):
    class Meta:
        model = LanguageModel
        fields = [
            "name", "kind", "model_name", "api_base", "api_key_env",
            "fine_tunable", "temperature", "max_tokens",
        ]  # fmt: skip
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
        self.fields["kind"].choices = [
            (LanguageModel.Kind.LOCAL, "local (transformers on a worker; fine-tunable)"),
            (LanguageModel.Kind.LITELLM, "LiteLLM (an API or an OpenAI-compatible server)"),
        ]

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
        data = super().clean()
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
        fields = [
            "project",
            "name",
            "kind",
            "model_name",
            "api_base",
            "api_key_env",
            "fine_tunable",
            "temperature",
            "max_tokens",
            "source_job",
            "created_by",
        ]

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        add_model_policy_errors(self, data.get("project"))
        return data


def add_model_policy_errors(form: forms.BaseForm, project: Project | None) -> None:
    """The installation's allow-lists (jobs/model_policy.py), as errors on the fields they concern."""
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


# --- trainsets -----------------------------------------------------------------------------


class TrainsetUploadForm(forms.Form):
    name = forms.CharField(max_length=200, required=False, help_text="Defaults to the file name.")
    file = forms.FileField(
        help_text="JSONL (one JSON object per line) or CSV with a header row; UTF-8.",
        widget=forms.ClearableFileInput(attrs={"accept": ".jsonl,.csv,.ndjson"}),
    )
    skip_bad_rows = forms.BooleanField(
        required=False,
        label="Skip bad rows",
        help_text="Import the valid rows and leave out the ones with errors.",
    )
    dev_ratio = forms.FloatField(
        initial=0.2, min_value=0.0, max_value=0.9, label="Dev ratio",
        help_text="Share of rows held out for evaluation.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )  # fmt: skip
    split_seed = forms.IntegerField(
        initial=0, min_value=INT32_MIN, max_value=INT32_MAX, label="Split seed"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text += f" At most {filesizeformat(upload_max_bytes())}."

    def clean_file(self) -> Any:
        from jobs.engine.trainsets import detect_format

        f = self.cleaned_data["file"]
        if f.size > upload_max_bytes():
            raise forms.ValidationError(
                f"The file is {filesizeformat(f.size)}; the limit is {filesizeformat(upload_max_bytes())}."
            )
        try:
            self.cleaned_data["fmt"] = detect_format(f.name)
        except ValueError as e:
            raise forms.ValidationError(str(e)) from e
        return f


class SplitForm(forms.Form):
    dev_ratio = forms.FloatField(
        min_value=0.0,
        max_value=0.9,
        label="Dev ratio",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    split_seed = forms.IntegerField(min_value=INT32_MIN, max_value=INT32_MAX, label="Seed")


# --- programs ------------------------------------------------------------------------------


MODULE_TYPE_CHOICES = [("Predict", "Predict"), ("ChainOfThought", "ChainOfThought")]


class ProgramNameForm(forms.Form):
    name = forms.CharField(max_length=200, help_text="e.g. “sentiment”; also the spec's name.")


class ProgramModuleForm(forms.Form):
    """One module of a program, in a formset. Errors surface through the spec parser."""

    name = forms.CharField(max_length=64, required=False, help_text="e.g. classify")
    type = forms.ChoiceField(choices=MODULE_TYPE_CHOICES, initial="Predict")
    signature = forms.CharField(
        max_length=2000, required=False, help_text="inputs -> outputs, e.g. “text -> sentiment”."
    )
    instructions = forms.CharField(widget=forms.Textarea(attrs={"rows": 2}), required=False)
    field_descriptions = forms.CharField(
        widget=forms.Textarea(attrs={"rows": 2}),
        required=False,
        help_text="One per line: “field: description”.",
    )

    def to_spec_dict(self) -> dict[str, Any] | None:
        """The module as a spec dict; None for an untouched extra row."""
        data = self.cleaned_data
        if not (data.get("name") or data.get("signature") or data.get("instructions")):
            return None
        module: dict[str, Any] = {
            "name": data.get("name", "").strip(),
            "type": data.get("type", "Predict"),
            "signature": data.get("signature", "").strip(),
        }
        if data.get("instructions", "").strip():
            module["instructions"] = data["instructions"].strip()
        fields = parse_descriptions(data.get("field_descriptions", ""))
        if fields:
            module["fields"] = fields
        return module


# absolute_max: a posted TOTAL_FORMS above 20 is refused, never built into that many forms.
ProgramModuleFormSet = forms.formset_factory(
    ProgramModuleForm, extra=0, min_num=1, max_num=20, absolute_max=20
)


def parse_descriptions(text: str) -> dict[str, str]:
    """“field: description” lines to a dict; lines without a colon are kept so the parser names them."""
    result: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            continue
        name, _, description = line.partition(":")
        result[name.strip()] = description.strip()
    return result


def format_descriptions(fields: dict[str, str]) -> str:
    return "\n".join(f"{name}: {description}" for name, description in fields.items())


class ProgramSpecForm(forms.Form):
    """A whole spec pasted as JSON/YAML, or uploaded as a file."""

    spec = forms.CharField(
        widget=forms.Textarea(attrs={"class": "code", "spellcheck": "false"}),
        required=False,
        label="Spec (JSON or YAML)",
    )
    spec_file = forms.FileField(
        required=False,
        label="…or upload a .json / .yaml file",
        widget=forms.ClearableFileInput(attrs={"accept": ".json,.yaml,.yml"}),
    )

    def clean(self) -> dict[str, Any]:
        data = super().clean()
        upload = data.get("spec_file")
        if upload:
            if upload.size > 200_000:
                raise forms.ValidationError("The spec file is larger than 200 kB.")
            name = upload.name.lower()
            data["fmt"] = (
                "json"
                if name.endswith(".json")
                else "yaml"
                if name.endswith((".yaml", ".yml"))
                else None
            )
            data["source"] = upload.read()
        elif data.get("spec", "").strip():
            data["fmt"] = None
            data["source"] = data["spec"]
        else:
            raise forms.ValidationError("Paste a spec or choose a file.")
        return data


# --- runs ----------------------------------------------------------------------------------


class BootstrapRunForm(forms.Form):
    trainset = forms.ModelChoiceField(queryset=None, empty_label=None)  # type: ignore[arg-type]
    program_version = forms.ModelChoiceField(queryset=None, empty_label=None, label="Program")  # type: ignore[arg-type]
    teacher = forms.ModelChoiceField(queryset=None, empty_label=None)  # type: ignore[arg-type]
    metric = forms.ChoiceField(choices=())
    metric_field = forms.CharField(
        max_length=64,
        label="Metric field",
        help_text="The program output compared with the trainset's label.",
    )
    threshold = forms.FloatField(
        initial=1.0, min_value=0.0, max_value=1.0,
        help_text="A trace passes when its score is at least this.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )  # fmt: skip
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
    num_threads = forms.IntegerField(
        initial=4, min_value=1, max_value=64, label="Threads", help_text="Examples run in parallel."
    )
    limit = forms.IntegerField(
        required=False,
        min_value=1,
        max_value=INT32_MAX,
        label="Example limit",
        help_text="Bootstrap at most this many train examples.",
    )
    num_demos = forms.IntegerField(
        initial=4, min_value=0, max_value=32, label="Labeled demos",
        help_text="Train-split examples shown to the teacher (small models need a few).",
    )  # fmt: skip
    demo_seed = forms.IntegerField(
        initial=0, min_value=INT32_MIN, max_value=INT32_MAX, label="Demo seed"
    )
    temperature = forms.FloatField(
        required=False, min_value=0.0, max_value=2.0, label="Teacher temperature",
        widget=forms.NumberInput(attrs={"step": "0.1", "placeholder": "the model's own"}),
        help_text="Empty: the teacher model's own setting (Models page).",
    )  # fmt: skip
    reason_demos = forms.BooleanField(
        required=False, label="Reason the demos first",
        help_text="Labeled demos carry no reasoning, and small teachers copy the gap. The teacher "
        "answers each demo first; an answer that passes keeps its reasoning (DSPy's BootstrapFewShot).",
    )  # fmt: skip
    skip_missing = forms.BooleanField(
        required=False, label="Skip rows missing a field",
        help_text="Train rows that lack a program input or the metric field (or hold null there) "
        "are left out and counted as skipped; the teacher never sees them. Unticked, they refuse the run.",
    )  # fmt: skip

    def __init__(self, *args: Any, project: Project, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from jobs.engine.metrics import METRICS
        from jobs.models import ProgramVersion, Trainset

        self.project = project
        trainsets = Trainset.objects.filter(project=project, status=Trainset.Status.READY)
        self.fields["trainset"].queryset = trainsets  # type: ignore[attr-defined]
        versions = ProgramVersion.objects.filter(program__project=project).select_related("program")
        self.fields["program_version"].queryset = versions.order_by("program__name", "-version")  # type: ignore[attr-defined]
        self.fields["program_version"].label_from_instance = lambda v: (
            f"{v.program.name} v{v.version}"
        )  # type: ignore[attr-defined]
        self.fields["teacher"].queryset = LanguageModel.objects.filter(project=project)  # type: ignore[attr-defined]
        self.fields["teacher"].label_from_instance = lambda m: (
            f"{m.name} ({m.model_name}, temperature {m.temperature})"
        )  # type: ignore[attr-defined]
        self.fields["teacher"].help_text = "Max tokens is set per model on the Models page."
        self.fields["metric"].choices = [(name, name) for name in METRICS]
        self.metric_descriptions = METRICS

    def clean(self) -> dict[str, Any]:
        """Refuse combinations that cannot work, with the reason."""
        from jobs.engine.metrics import validate_metric_spec
        from jobs.engine.programs import ProgramSpecError, check_fields
        from jobs.engine.types import BootstrapConfig, MetricSpec

        data = super().clean()
        trainset, version = data.get("trainset"), data.get("program_version")
        if self.errors or not trainset or not version:
            return data  # the fields' own errors first
        try:
            spec = version.to_spec()
        except ProgramSpecError as e:
            raise forms.ValidationError(f"The program's spec is invalid: {e}") from e
        field = data["metric_field"].strip()
        if field not in spec.output_fields:
            self.add_error(
                "metric_field",
                f"“{field}” is not an output of {version.program.name} v{version.version} "
                f"(outputs: {', '.join(spec.output_fields)}).",
            )
            return data
        problems = check_fields(spec, trainset.field_names, label_fields=[field])
        if problems:
            raise forms.ValidationError(
                [
                    f"{version.program.name} v{version.version} does not fit trainset {trainset.name}: {p}"
                    for p in problems
                ]
            )
        missing = trainset.rows_missing([*spec.input_fields, field])
        if missing.count and not data.get("skip_missing"):
            raise forms.ValidationError(
                f"{missing}. Fix the file and upload it again, or tick “Skip rows missing a field”."
            )
        options: dict[str, Any] = {}
        if data["metric"] == "numeric":
            options = {
                "tolerance": data.get("tolerance") or 0.0,
                "relative": bool(data.get("relative")),
            }
        elif data["metric"] == "regex":
            if not data.get("pattern"):
                self.add_error("pattern", "The regex metric needs a pattern.")
                return data
            options = {"pattern": data["pattern"]}
        metric = MetricSpec(
            name=data["metric"], field=field, threshold=data["threshold"], options=options
        )
        try:
            validate_metric_spec(metric, output_fields=spec.output_fields)
        except ValueError as e:
            raise forms.ValidationError(f"Metric: {e}") from e
        data["metric_spec"] = metric
        data["program_spec"] = spec
        data["bootstrap_config"] = BootstrapConfig(
            num_threads=data["num_threads"],
            num_demos=data["num_demos"],
            demo_seed=data["demo_seed"],
            limit=data.get("limit"),
            temperature=data.get("temperature"),
            reason_demos=bool(data.get("reason_demos")),
        )
        return data


# FinetuneConfig fields shown on the fine-tune form, with help text. base_model comes from the
# student; every other field of the engine's config must appear here (a test checks it).
FINETUNE_HELP: dict[str, str] = {
    "epochs": "Passes over the training rows.",
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
            initial=default, min_value=0.0, help_text=help_text, label=label,
            widget=forms.NumberInput(attrs={"step": "any"}),
        )  # fmt: skip
    if isinstance(default, int) or default is None:
        return forms.IntegerField(
            initial=default, min_value=0 if f.name == "seed" else 1, max_value=INT32_MAX,
            required=default is not None, help_text=help_text, label=label,
        )  # fmt: skip
    return forms.CharField(initial=default, help_text=help_text, label=label)


FINETUNE_CONFIG_FIELDS = [f for f in dataclasses.fields(FinetuneConfig) if f.name != "base_model"]


class FinetuneForm(forms.Form):
    student = forms.ModelChoiceField(
        queryset=None,  # type: ignore[arg-type]
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
    trace_set = forms.ModelChoiceField(
        queryset=None,  # type: ignore[arg-type]
        required=False,
        empty_label="Freeze the selection above now (a new trace set)",
        help_text="Or train on a set frozen earlier on the review page (its decisions and edits as frozen).",
    )

    def __init__(self, *args: Any, run: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        from jobs.models import FinetuneJob

        self.run = run
        # Every model of the project is offered to the validator, so a non-fine-tunable student
        # posted by hand is refused with a reason rather than "not one of the choices".
        self.fields["student"].queryset = LanguageModel.objects.filter(project=run.project)  # type: ignore[attr-defined]
        self.student_choices = LanguageModel.objects.filter(
            project=run.project, kind=LanguageModel.Kind.LOCAL, fine_tunable=True
        )
        self.fields["selection"].choices = FinetuneJob.Selection.choices
        self.fields["trace_set"].queryset = run.trace_sets.order_by("-version")  # type: ignore[attr-defined]
        defaults = FinetuneConfig(base_model="-")
        for f in FINETUNE_CONFIG_FIELDS:
            self.fields[f.name] = _finetune_field(f, getattr(defaults, f.name))

    def config_fields(self) -> list[forms.BoundField]:
        return [self[f.name] for f in FINETUNE_CONFIG_FIELDS]

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
        data = super().clean()
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
        values = {f.name: data[f.name] for f in FINETUNE_CONFIG_FIELDS}
        data["config"] = FinetuneConfig(base_model=student.model_name, **values)
        return data
