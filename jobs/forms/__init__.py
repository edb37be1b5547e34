"""Forms: parse and validate what people type, return typed values. One module per page family:
projects, language_models, trainsets, programs, runs, finetunes, review, evaluations, playground,
api_keys; fields holds the typed access to a form's fields. The one rule for each number or flag
read from a request is jobs/values.py (the services read filters with it too)."""
