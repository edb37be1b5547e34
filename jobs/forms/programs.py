"""Program forms: a spec typed module by module, or pasted as JSON/YAML."""

from __future__ import annotations

from typing import Any

from django import forms
from django.http import QueryDict

from jobs.engine.programs import ProgramSpec, ProgramSpecError, parse_program_spec

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
        super().clean()
        data = self.cleaned_data
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


MODULES_PREFIX = "modules"


def parse_spec(source: Any, fmt: str | None = None) -> tuple[ProgramSpec | None, str, str]:
    """(spec, error key, error message): the spec, or the parser's first complaint."""
    try:
        return parse_program_spec(source, fmt=fmt), "", ""
    except ProgramSpecError as e:
        return None, e.key, e.message


class ProgramDraft:
    """What a program form POST holds: the forms, the spec dict they make, and its parse result."""

    def __init__(
        self, data: QueryDict | None, files: Any = None, *, fixed_name: str | None = None
    ) -> None:
        self.mode = data.get("mode", "form") if data is not None else "form"
        self.name_form = ProgramNameForm(
            data if self.mode == "form" else None, initial={"name": fixed_name or ""}
        )
        self.formset = ProgramModuleFormSet(
            data if self.mode == "form" else None, prefix=MODULES_PREFIX
        )
        self.spec_form = ProgramSpecForm(
            data if self.mode == "spec" else None, files if self.mode == "spec" else None
        )
        self.fixed_name = fixed_name
        self.spec: ProgramSpec | None = None
        self.error_key = ""
        self.error = ""

    def check(self) -> ProgramSpec | None:
        """What was posted, parsed (also kept as ``spec``); None, with error_key/error saying
        where and why, when it does not parse."""
        if self.mode == "spec":
            if not self.spec_form.is_valid():
                self.error_key, self.error = (
                    "(document)",
                    " ".join(map(str, self.spec_form.non_field_errors())) or "invalid input",
                )
                return None
            source: Any = self.spec_form.cleaned_data["source"]
            fmt = self.spec_form.cleaned_data["fmt"]
            if self.fixed_name is not None:
                loaded, key, message = parse_spec(source, fmt)
                if loaded is None:
                    self.error_key, self.error = key, message
                    return None
                source, fmt = {**loaded.to_dict(), "name": self.fixed_name}, None
        else:
            if self.fixed_name is None and not self.name_form.is_valid():
                self.error_key, self.error = (
                    "name",
                    " ".join(map(str, self.name_form.errors.get("name", ["is required"]))),
                )
                return None
            if not self.formset.is_valid():
                self.error_key, self.error = (
                    "modules",
                    " ".join(map(str, self.formset.non_form_errors())) or "check the modules",
                )
                return None
            modules = [m for m in (f.to_spec_dict() for f in self.formset.forms) if m is not None]
            name = (
                self.fixed_name
                if self.fixed_name is not None
                else self.name_form.cleaned_data["name"].strip()
            )
            source = {"name": name, "modules": modules}
            fmt = None
        self.spec, self.error_key, self.error = parse_spec(source, fmt)
        return self.spec
