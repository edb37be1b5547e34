"""The API keys page's form: a new key's name and scope."""

from __future__ import annotations

from django import forms

from jobs.models import ApiKey


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What uses it, e.g. “nightly retrain (CI)”.")
    scope = forms.ChoiceField(
        choices=ApiKey.Scope.choices,
        initial=ApiKey.Scope.READ,
        help_text="Read only: lists and details. Read and write: also uploads, runs, reviews, "
        "fine-tunes and webhooks, as an operator.",
    )
