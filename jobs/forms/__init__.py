"""Forms: parse and validate what people type, return typed values. One module per page family:
projects, language_models, trainsets, programs, runs, finetunes; values holds the one rule for
each number or flag read from a request."""
