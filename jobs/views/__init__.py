"""Function views, one module per page family of jobs/urls.py (projects, language_models,
trainsets, programs, runs, finetunes, review, jobs_list, evaluations, playground, api_keys; live:
what the live pages share). Every view under /p/<slug>/ starts with
``get_project_for(request, slug, need=...)`` (jobs/permissions.py), parses with a form, calls a
service and renders; files go out through jobs/downloads.py."""
