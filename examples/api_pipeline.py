"""Distill through bftweb's API: upload, program, run, wait, freeze the passing traces, fine-tune,
wait, print the model id. BFTWEB_URL, BFTWEB_PROJECT and BFTWEB_KEY (a read-write key) say where;
RUN_OPTIONS and FINETUNE_OPTIONS (JSON) add any field of the run and fine-tune forms.

    python examples/api_pipeline.py jobs/demo/sentiment.jsonl jobs/demo/sentiment_program.json sentiment
"""

from __future__ import annotations

import json
import os
import sys
import time
from typing import Any

import requests

api = f"{os.environ['BFTWEB_URL']}/api/v1/projects/{os.environ['BFTWEB_PROJECT']}"
session = requests.Session()
session.headers["Authorization"] = f"Bearer {os.environ['BFTWEB_KEY']}"
trainset_file, program_file, label = sys.argv[1:4]
run_options = json.loads(os.getenv("RUN_OPTIONS", '{"limit": 16}'))
finetune_options = json.loads(os.getenv("FINETUNE_OPTIONS", "{}"))  # e.g. {"epochs": 1}


def call(method: str, path: str, **kwargs: Any) -> Any:
    r = session.request(method, api + path, timeout=60, **kwargs)
    if not r.ok:  # every error is JSON: {"detail", "code", "errors": [{"field" or "line", ...}]}
        sys.exit(f"{method} {path}: {r.status_code} {r.text}")
    return r.json()


def wait(path: str) -> Any:
    while (row := call("GET", path))["status"] in ("queued", "running"):
        time.sleep(2)
    if row["status"] != "succeeded":
        sys.exit(f"{path} {row['status']}: {row['error']}")
    return row


with open(trainset_file, "rb") as f:
    trainset = call("POST", "/trainsets/", files={"file": f})
with open(program_file) as f:
    version = call("POST", "/programs/", json={"spec": json.load(f)})
models = {m["name"]: m["id"] for m in call("GET", "/models/")["results"]}
if "smollm2" not in models:  # the bundled model, as teacher and student
    body = {"name": "smollm2", "model_name": "smollm2", "fine_tunable": True}
    models["smollm2"] = call("POST", "/models/", json=body)["id"]
run = call(
    "POST",
    "/runs/",
    json={
        "trainset": trainset["id"],
        "program_version": version["id"],
        "teacher": models["smollm2"],
        "metric": "exact_match",
        "metric_field": label,
        **run_options,
    },
)
run = wait(f"/runs/{run['id']}/")
traces = call("POST", f"/runs/{run['id']}/trace-sets/", json={"selection": "passing"})
job = call(
    "POST",
    "/finetunes/",
    json={
        "run": run["id"],
        "student": models["smollm2"],
        "selection": "passing",
        "trace_set": traces["id"],
        **finetune_options,
    },
)
print(wait(f"/finetunes/{job['id']}/")["output_model_id"])
