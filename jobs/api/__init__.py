"""The JSON API, /api/v1/ (Django REST Framework; drf-spectacular writes its OpenAPI schema).

Every resource lives under its project, /api/v1/projects/<slug>/..., and calls the services the
pages call; a write endpoint's input is the page's form (forms.py), so no rule exists twice.

- urls: the router, the schema (/api/v1/schema/) and its docs page (/api/v1/docs/)
- authentication: project API keys (Authorization: Bearer ...); sessions work too, with CSRF
- permissions: the project from the URL, the key's or the member's role (jobs/permissions.py)
- throttles, pagination (cursor), errors (every error is JSON naming its field or row)
- base: what every project resource shares; live: cancel, retry and the queue's view of a row
- one module per resource: projects, trainsets, programs, language_models (/models/), runs,
  review (a run's traces and trace sets), finetunes, evaluations, webhooks
"""

from __future__ import annotations
