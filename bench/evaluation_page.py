"""Server time and queries of the evaluation pages with 10,000 results (SQLite, DEBUG=False).

A fresh child process builds a scratch SQLite database: one evaluation of three candidates
(teacher, base student, fine-tuned student) on 3,334 rows, every result stored as the worker
stores it. Then it times the comparison page (summaries, paired tests, confusion matrices and a
page of rows, disagreements first), a filtered page, a far page, one row side by side, and the CSV
export, through Django's test client, counting queries (bench.review_pages.measure).

Usage: ``python -m bench.evaluation_page [--rows N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
LABELS = ["world", "sports", "business", "science"]


def build(rows: int, seed: int = 0) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.db import transaction

    from jobs.engine.types import MetricSpec
    from jobs.models import (
        Evaluation,
        EvaluationCandidate,
        EvaluationResult,
        LanguageModel,
        Membership,
        Program,
        ProgramVersion,
        Project,
        Trainset,
        TrainsetRow,
    )
    from jobs.services import comparisons

    rng = random.Random(seed)
    project = Project.objects.create(name="bench", slug="bench")
    alice = User.objects.create_user("alice")
    Membership.objects.create(project=project, user=alice, role="owner")
    trainset = Trainset.objects.create(
        project=project,
        name="topics",
        row_count=rows,
        status="ready",
        created_by=alice,
        fields=[{"name": "text", "type": "str"}, {"name": "topic", "type": "str"}],
    )
    data = [
        {
            "text": f"headline {i}: " + " ".join(rng.choice(LABELS) for _ in range(12)),
            "topic": rng.choice(LABELS),
        }
        for i in range(rows)
    ]
    TrainsetRow.objects.bulk_create(
        TrainsetRow(trainset=trainset, index=i, data=row, split="dev") for i, row in enumerate(data)
    )
    program = Program.objects.create(project=project, name="topics", created_by=alice)
    version = ProgramVersion.objects.create(
        program=program,
        version=1,
        created_by=alice,
        spec={
            "name": "topics",
            "modules": [
                {"name": "classify", "type": "ChainOfThought", "signature": "text -> topic"}
            ],
        },
    )
    evaluation = Evaluation.objects.create(
        project=project,
        program_version=version,
        trainset=trainset,
        metric=MetricSpec("exact_match", "topic").to_dict(),
        rows=rows,
        total=3 * rows,
        done=3 * rows,
        status="succeeded",
        created_by=alice,
    )
    accuracy = {"teacher": 0.8, "base": 0.3, "student": 0.75}
    started = time.monotonic()
    with transaction.atomic():
        for position, role in enumerate(accuracy):
            model = LanguageModel.objects.create(
                project=project, name=role, model_name="smollm2", created_by=alice
            )
            candidate = EvaluationCandidate.objects.create(
                evaluation=evaluation, position=position, role=role, language_model=model
            )
            results = []
            for i, row in enumerate(data):
                parsed = rng.random() > 0.05
                right = parsed and rng.random() < accuracy[role]
                answer = row["topic"] if right else rng.choice(LABELS)
                results.append(
                    EvaluationResult(
                        candidate=candidate,
                        row_index=i,
                        inputs={"text": row["text"]},
                        labels={"topic": row["topic"]},
                        outputs={"topic": answer} if parsed else {},
                        reasoning=f"The headline is about {answer}." if parsed else "",
                        raw="" if parsed else "[[ ## reasoning ## ]]\nhalf an answer",
                        score=1.0 if parsed and answer == row["topic"] else 0.0,
                        passed=parsed and answer == row["topic"],
                        parsed=parsed,
                        latency_s=round(rng.uniform(0.2, 2.0), 3),
                        tokens_in=rng.randint(150, 300),
                        tokens_out=rng.randint(20, 60),
                        lm_calls=1,
                    )
                )
            EvaluationResult.objects.bulk_create(results, batch_size=2000)
    built_s = time.monotonic() - started
    Evaluation.objects.filter(pk=evaluation.pk).update(
        verdict=comparisons.compare(evaluation).verdict()
    )
    pks = list(evaluation.candidates.order_by("position").values_list("pk", flat=True))
    return {"evaluation": evaluation.pk, "candidates": pks, "built_s": built_s}


def child(rows: int, repeat: int) -> dict[str, Any]:
    import django

    django.setup()
    from django.contrib.auth.models import User
    from django.core.management import call_command
    from django.test import Client

    from bench.review_pages import measure

    call_command("migrate", verbosity=0)
    info = build(rows)
    client = Client()
    client.force_login(User.objects.get(username="alice"))
    base = f"/p/bench/evaluations/{info['evaluation']}/"
    teacher, _base, student = info["candidates"]
    pages: dict[str, str | list[str]] = {
        "comparison page": base,
        "student wrong, teacher right": f"{base}?pair={student}-{teacher}&kind=a_wrong_b_right",
        "comparison, page 60": f"{base}?page=60",
        "one row side by side": [f"{base}rows/{i}/" for i in range(0, rows, max(1, rows // 20))],
        "CSV export (10k rows)": f"{base}export.csv",
    }
    return {
        "info": info,
        "pages": {name: measure(client, url, repeat) for name, url in pages.items()},
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="bench.evaluation_page")
    parser.add_argument("--rows", type=int, default=3334, help="rows per candidate (3 candidates)")
    parser.add_argument("--repeat", type=int, default=10)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(args.rows, args.repeat)))
        return
    with tempfile.TemporaryDirectory(prefix="bft-evaluation-bench-") as tmp:
        workdir = Path(tmp)
        env = {
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "bftweb.settings",
            "DEBUG": "False",
            "SECRET_KEY": os.environ.get("SECRET_KEY", "bench-only-not-secret"),
            "SECURE_SSL_REDIRECT": "False",
            "ALLOWED_HOSTS": "testserver,localhost",
            "DATABASE_URL": f"sqlite:///{workdir / 'evaluation.sqlite3'}",
            "BFT_VAR_DIR": str(workdir),
            "BFT_ARTIFACTS_DIR": str(workdir / "artifacts"),
            "LOG_LEVEL": "WARNING",
        }
        cmd = [sys.executable, "-m", "bench.evaluation_page", "--child"]
        cmd += ["--rows", str(args.rows), "--repeat", str(args.repeat)]
        out = subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True, text=True)
        data = json.loads(out.stdout.strip().splitlines()[-1])
    print(
        f"{3 * args.rows:,} results (3 candidates × {args.rows:,} rows), built in "
        f"{data['info']['built_s']:.0f} s; DEBUG=False; {args.repeat} requests per page"
    )
    print(f"{'page':<32} {'median ms':>10} {'p95 ms':>8} {'queries':>8}")
    for name, r in data["pages"].items():
        q = (
            str(r["queries"])
            if r["queries"] == r["min_queries"]
            else f"{r['min_queries']}–{r['queries']}"
        )
        print(f"{name:<32} {r['median_ms']:>10.1f} {r['p95_ms']:>8.1f} {q:>8}")


if __name__ == "__main__":
    main()
