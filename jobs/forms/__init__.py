"""Forms: parse and validate what people type, return typed values. One module per page family:
projects, language_models, trainsets, programs, runs, finetunes, review; values holds the one
rule for each number or flag read from a request, fields the typed access to a form's fields."""
