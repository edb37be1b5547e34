"""Every object URL lives under its project: /p/<slug>/... (non-members get 404 for all of it)."""

from __future__ import annotations

from django.urls import path

from jobs.views import (
    job_live,
    jobs_list,
    language_models,
    programs,
    projects,
    review,
    run_live,
    runs,
    trainsets,
)

app_name = "jobs"

urlpatterns = [
    path("", projects.home, name="home"),
    path("p/<slug:slug>/", projects.project_detail, name="project-detail"),
    path("p/<slug:slug>/members/", projects.member_list, name="member-list"),
    path("p/<slug:slug>/members/add/", projects.member_add, name="member-add"),
    path("p/<slug:slug>/members/<int:pk>/role/", projects.member_role, name="member-role"),
    path("p/<slug:slug>/members/<int:pk>/remove/", projects.member_remove, name="member-remove"),
    # models
    path("p/<slug:slug>/models/", language_models.model_list, name="model-list"),
    path("p/<slug:slug>/models/new/", language_models.model_create, name="model-create"),
    path("p/<slug:slug>/models/<int:pk>/edit/", language_models.model_edit, name="model-edit"),
    path("p/<slug:slug>/models/<int:pk>/test/", language_models.model_test, name="model-test"),
    path(
        "p/<slug:slug>/models/<int:pk>/test/status/",
        language_models.model_test_status,
        name="model-test-status",
    ),
    # trainsets
    path("p/<slug:slug>/trainsets/", trainsets.trainset_list, name="trainset-list"),
    path("p/<slug:slug>/trainsets/upload/", trainsets.trainset_upload, name="trainset-upload"),
    path("p/<slug:slug>/trainsets/<int:pk>/", trainsets.trainset_detail, name="trainset-detail"),
    path(
        "p/<slug:slug>/trainsets/<int:pk>/status/",
        trainsets.trainset_status,
        name="trainset-status",
    ),
    path(
        "p/<slug:slug>/trainsets/<int:pk>/split/", trainsets.trainset_split, name="trainset-split"
    ),
    # programs
    path("p/<slug:slug>/programs/", programs.program_list, name="program-list"),
    path("p/<slug:slug>/programs/new/", programs.program_create, name="program-create"),
    path("p/<slug:slug>/programs/validate/", programs.program_validate, name="program-validate"),
    path(
        "p/<slug:slug>/programs/module-row/", programs.program_module_row, name="program-module-row"
    ),
    path("p/<slug:slug>/programs/<int:pk>/", programs.program_detail, name="program-detail"),
    path(
        "p/<slug:slug>/programs/<int:pk>/v/<int:version>/",
        programs.program_detail,
        name="program-version",
    ),
    path("p/<slug:slug>/programs/<int:pk>/edit/", programs.program_edit, name="program-edit"),
    # runs and jobs
    path("p/<slug:slug>/runs/", runs.run_list, name="run-list"),
    path("p/<slug:slug>/runs/new/", runs.run_create, name="run-create"),
    path("p/<slug:slug>/runs/estimate/", runs.run_estimate, name="run-estimate"),
    path("p/<slug:slug>/runs/<int:pk>/", run_live.run_detail, name="run-detail"),
    path("p/<slug:slug>/runs/<int:pk>/status/", run_live.run_status, name="run-status"),
    path("p/<slug:slug>/runs/<int:pk>/cancel/", run_live.run_cancel, name="run-cancel"),
    path("p/<slug:slug>/runs/<int:pk>/retry/", run_live.run_retry, name="run-retry"),
    path("p/<slug:slug>/runs/<int:pk>/finetune/", runs.run_finetune, name="run-finetune"),
    path(
        "p/<slug:slug>/runs/<int:pk>/finetune/preview/",
        runs.run_finetune_preview,
        name="run-finetune-preview",
    ),
    # trace review (issue 6)
    path("p/<slug:slug>/runs/<int:pk>/review/", review.review_queue, name="review-queue"),
    path("p/<slug:slug>/runs/<int:pk>/review/counts/", review.review_counts, name="review-counts"),
    path(
        "p/<slug:slug>/runs/<int:pk>/review/threshold/",
        review.review_threshold,
        name="review-threshold",
    ),
    path("p/<slug:slug>/runs/<int:pk>/review/bulk/", review.review_bulk, name="review-bulk"),
    path("p/<slug:slug>/runs/<int:pk>/review/assign/", review.review_assign, name="review-assign"),
    path("p/<slug:slug>/runs/<int:pk>/review/claim/", review.review_claim, name="review-claim"),
    path(
        "p/<slug:slug>/runs/<int:pk>/review/settings/",
        review.review_settings,
        name="review-settings",
    ),
    path("p/<slug:slug>/runs/<int:pk>/review/sets/", review.review_freeze, name="review-freeze"),
    path(
        "p/<slug:slug>/runs/<int:pk>/review/sets/<int:set_pk>/export.<str:fmt>",
        review.trace_set_export,
        name="trace-set-export",
    ),
    path(
        "p/<slug:slug>/runs/<int:pk>/review/<int:trace_pk>/",
        review.review_trace,
        name="review-trace",
    ),
    path(
        "p/<slug:slug>/runs/<int:pk>/review/<int:trace_pk>/decide/",
        review.review_decide,
        name="review-decide",
    ),
    path(
        "p/<slug:slug>/runs/<int:pk>/review/<int:trace_pk>/edit/",
        review.review_edit,
        name="review-edit",
    ),
    # live runs and jobs (issue 5)
    path("p/<slug:slug>/jobs/", jobs_list.jobs_list, name="job-list"),
    path("p/<slug:slug>/jobs/table/", jobs_list.jobs_table, name="jobs-table"),
    path("p/<slug:slug>/jobs/workers/", jobs_list.workers, name="workers"),
    path("p/<slug:slug>/jobs/<int:pk>/", job_live.job_detail, name="job-detail"),
    path("p/<slug:slug>/jobs/<int:pk>/status/", job_live.job_status, name="job-status"),
    path("p/<slug:slug>/jobs/<int:pk>/cancel/", job_live.job_cancel, name="job-cancel"),
    path("p/<slug:slug>/jobs/<int:pk>/retry/", job_live.job_retry, name="job-retry"),
    path(
        "p/<slug:slug>/jobs/<int:pk>/download/<str:kind>/",
        job_live.job_download,
        name="job-download",
    ),
]
