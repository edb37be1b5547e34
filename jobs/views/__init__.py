"""Function views, one module per page family of jobs/urls.py (projects, language_models,
trainsets, programs, runs, finetunes, review, jobs_list, evaluations, playground, api_keys; live.py:
what the live run and job pages share). Every view under /p/<slug>/ starts with ``get_project_for(request, slug, need=...)``
(jobs/permissions.py), parses with a form, calls a service and renders."""
