from __future__ import annotations

from django.contrib import admin
from django.urls import include, path

urlpatterns = [
    # django-rq's queue and worker pages; every view is @staff_member_required.
    path("admin/rq/", include("django_rq.urls")),
    path("admin/", admin.site.urls),
    path("accounts/", include("django.contrib.auth.urls")),
    path("", include("jobs.urls")),
]
