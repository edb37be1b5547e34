"""Trainset upload and re-split forms."""

from __future__ import annotations

from typing import Any

from django import forms
from django.conf import settings
from django.template.defaultfilters import filesizeformat

from jobs.engine.trainsets import detect_format
from jobs.values import INT32_MAX, INT32_MIN


def upload_max_bytes() -> int:
    return int(settings.BFT_UPLOAD_MAX_BYTES)


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
        initial=0.2,
        min_value=0.0,
        max_value=0.9,
        label="Dev ratio",
        help_text="Share of rows held out for evaluation.",
        widget=forms.NumberInput(attrs={"step": "0.05"}),
    )
    split_seed = forms.IntegerField(
        initial=0, min_value=INT32_MIN, max_value=INT32_MAX, label="Split seed"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["file"].help_text += f" At most {filesizeformat(upload_max_bytes())}."

    def clean_file(self) -> Any:
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
