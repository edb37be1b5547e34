"""Every object URL lives under its project: /p/<slug>/... (non-members get 404 for all of it).

Each group below is one module of jobs/views/ (and its services in jobs/services/ of the same
name): /p/<slug>/runs/... is views/runs.py, /p/<slug>/jobs/<pk>/... is views/finetunes.py.
"""

from __future__ import annotations

from django.urls import URLPattern, URLResolver, include, path

from jobs.views import (
    api_keys,
    evaluations,
    finetunes,
    jobs_list,
    language_models,
    playground,
    programs,
    projects,
    review,
    runs,
    trainsets,
)

app_name = "jobs"

member_urls = [
    path("", projects.member_list, name="member-list"),
    path("add/", projects.member_add, name="member-add"),
    path("<int:pk>/role/", projects.member_role, name="member-role"),
    path("<int:pk>/remove/", projects.member_remove, name="member-remove"),
]

key_urls = [  # /p/<slug>/keys/: the project's API keys (owners)
    path("", api_keys.key_list, name="key-list"),
    path("new/", api_keys.key_create, name="key-create"),
    path("<int:pk>/revoke/", api_keys.key_revoke, name="key-revoke"),
]

model_urls = [
    path("", language_models.model_list, name="model-list"),
    path("new/", language_models.model_create, name="model-create"),
    path("<int:pk>/edit/", language_models.model_edit, name="model-edit"),
    path("<int:pk>/test/", language_models.model_test, name="model-test"),
    path("<int:pk>/test/status/", language_models.model_test_status, name="model-test-status"),
]

trainset_urls = [
    path("", trainsets.trainset_list, name="trainset-list"),
    path("upload/", trainsets.trainset_upload, name="trainset-upload"),
    path("<int:pk>/", trainsets.trainset_detail, name="trainset-detail"),
    path("<int:pk>/status/", trainsets.trainset_status, name="trainset-status"),
    path("<int:pk>/split/", trainsets.trainset_split, name="trainset-split"),
]

program_urls = [
    path("", programs.program_list, name="program-list"),
    path("new/", programs.program_create, name="program-create"),
    path("validate/", programs.program_validate, name="program-validate"),
    path("module-row/", programs.program_module_row, name="program-module-row"),
    path("<int:pk>/", programs.program_detail, name="program-detail"),
    path("<int:pk>/v/<int:version>/", programs.program_detail, name="program-version"),
    path("<int:pk>/edit/", programs.program_edit, name="program-edit"),
]

review_urls = [  # /p/<slug>/runs/<pk>/review/...
    path("", review.review_queue, name="review-queue"),
    path("counts/", review.review_counts, name="review-counts"),
    path("threshold/", review.review_threshold, name="review-threshold"),
    path("bulk/", review.review_bulk, name="review-bulk"),
    path("assign/", review.review_assign, name="review-assign"),
    path("claim/", review.review_claim, name="review-claim"),
    path("settings/", review.review_settings, name="review-settings"),
    path("sets/", review.review_freeze, name="review-freeze"),
    path("sets/<int:set_pk>/export.<str:fmt>", review.trace_set_export, name="trace-set-export"),
    path("<int:trace_pk>/", review.review_trace, name="review-trace"),
    path("<int:trace_pk>/decide/", review.review_decide, name="review-decide"),
    path("<int:trace_pk>/edit/", review.review_edit, name="review-edit"),
]

run_urls: list[URLPattern | URLResolver] = [
    path("", runs.run_list, name="run-list"),
    path("new/", runs.run_create, name="run-create"),
    path("estimate/", runs.run_estimate, name="run-estimate"),
    path("<int:pk>/", runs.run_detail, name="run-detail"),
    path("<int:pk>/status/", runs.run_status, name="run-status"),
    path("<int:pk>/cancel/", runs.run_cancel, name="run-cancel"),
    path("<int:pk>/retry/", runs.run_retry, name="run-retry"),
    path("<int:pk>/continue/", runs.run_continue, name="run-continue"),
    path("<int:pk>/rescore/", runs.run_rescore, name="run-rescore"),
    path("<int:pk>/finetune/", finetunes.run_finetune, name="run-finetune"),
    path(
        "<int:pk>/finetune/preview/",
        finetunes.run_finetune_preview,
        name="run-finetune-preview",
    ),
    path("<int:pk>/review/", include(review_urls)),
]

job_urls = [  # every queued run and fine-tune of the project; one fine-tune's live page
    path("", jobs_list.jobs_list, name="job-list"),
    path("table/", jobs_list.jobs_table, name="jobs-table"),
    path("workers/", jobs_list.workers, name="workers"),
    path("<int:pk>/", finetunes.job_detail, name="job-detail"),
    path("<int:pk>/status/", finetunes.job_status, name="job-status"),
    path("<int:pk>/cancel/", finetunes.job_cancel, name="job-cancel"),
    path("<int:pk>/retry/", finetunes.job_retry, name="job-retry"),
    path("<int:pk>/download/<str:kind>/", finetunes.job_download, name="job-download"),
]

evaluation_urls = [  # one evaluation's comparison page, its live status and its rows
    path("", evaluations.evaluation_list, name="evaluation-list"),
    path("new/", evaluations.evaluation_create, name="evaluation-create"),
    path(
        "job/<int:job_pk>/verdict/",
        evaluations.evaluation_job_verdict,
        name="evaluation-job-verdict",
    ),
    path("<int:pk>/", evaluations.evaluation_detail, name="evaluation-detail"),
    path("<int:pk>/status/", evaluations.evaluation_status, name="evaluation-status"),
    path("<int:pk>/cancel/", evaluations.evaluation_cancel, name="evaluation-cancel"),
    path("<int:pk>/retry/", evaluations.evaluation_retry, name="evaluation-retry"),
    path("<int:pk>/rows/<int:row_index>/", evaluations.evaluation_row, name="evaluation-row"),
    path("<int:pk>/export.<str:fmt>", evaluations.evaluation_export, name="evaluation-export"),
]

playground_urls = [
    path("", playground.playground_page, name="playground"),
    path("tries/<int:pk>/", playground.playground_try, name="playground-try"),
]

project_urls: list[URLPattern | URLResolver] = [
    path("", projects.project_detail, name="project-detail"),
    path("members/", include(member_urls)),
    path("keys/", include(key_urls)),
    path("models/", include(model_urls)),
    path("trainsets/", include(trainset_urls)),
    path("programs/", include(program_urls)),
    path("runs/", include(run_urls)),
    path("jobs/", include(job_urls)),
    path("evaluations/", include(evaluation_urls)),
    path("playground/", include(playground_urls)),
]

urlpatterns = [
    path("", projects.home, name="home"),
    path("p/<slug:slug>/", include(project_urls)),
]
