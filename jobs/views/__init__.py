"""Function views, one module per screen. Every view under /p/<slug>/ starts with
``get_project_for(request, slug, need=...)`` (jobs/permissions.py)."""
