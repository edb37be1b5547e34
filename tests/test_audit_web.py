"""Security audit, web side: each test is what an attacker tries, through the real pages.

The attacker is a second user who owns their own project (charlie owns p2), or a member of p1
with a weak role. Items: the project always keeps an owner (row lock), trace-set exports serve
only .csv and .jsonl under a server-built name, malformed numbers are form errors (never a 500),
login attempts are throttled (django-axes), and "add member" does not reveal which usernames exist.
"""

from __future__ import annotations

import re
import threading
import time
import unittest
from typing import Any

import dspy
from django.conf import settings
from django.core.exceptions import PermissionDenied
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection, connections, transaction
from django.test import Client, TransactionTestCase

from jobs.engine.training_data import call_messages, signature_to_dict
from jobs.models import BootstrapRun, FinetuneJob, Membership, Trace, Trainset
from jobs.services import trace_sets
from jobs.services.projects import LastOwnerError, change_role, remove_member
from tests.base import CastMixin
from tests.web import WebTestCase

HUGE = "99999999999999999999"  # above any 64-bit integer column
NOT_NUMBERS = (HUGE, "-" + HUGE, "abc", "1e999", "nan", "", "²")

OWNER = Membership.Role.OWNER


# --- 1. a project always keeps an owner ------------------------------------------------------


class LastOwnerTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.alice_m = Membership.objects.get(project=self.p1, user=self.alice)
        self.bob_m = Membership.objects.get(project=self.p1, user=self.bob)

    def owners(self) -> list[str]:
        return sorted(
            self.p1.memberships.filter(role=OWNER).values_list("user__username", flat=True)
        )

    def test_the_last_owner_can_neither_be_demoted_nor_removed(self) -> None:
        with self.assertRaises(LastOwnerError):
            change_role(membership=self.alice_m, role="viewer", by=self.alice)
        with self.assertRaises(LastOwnerError):
            remove_member(membership=self.alice_m, by=self.alice)
        self.assertEqual(self.owners(), ["alice"])

    def test_with_a_second_owner_either_may_step_down(self) -> None:
        change_role(membership=self.bob_m, role=OWNER, by=self.alice)
        change_role(membership=self.alice_m, role="viewer", by=self.alice)
        self.assertEqual(self.owners(), ["bob"])
        with self.assertRaises(LastOwnerError):
            remove_member(membership=self.bob_m, by=self.bob)

    def test_an_owner_demoted_meanwhile_can_no_longer_change_roles(self) -> None:
        """Bob's request passed the page's owner check, but alice demoted him before it ran."""
        change_role(membership=self.bob_m, role=OWNER, by=self.alice)
        change_role(membership=self.bob_m, role="viewer", by=self.alice)
        with self.assertRaises(PermissionDenied):
            change_role(membership=self.alice_m, role="viewer", by=self.bob)
        with self.assertRaises(PermissionDenied):
            remove_member(membership=self.alice_m, by=self.bob)
        self.assertEqual(self.owners(), ["alice"])

    def test_the_members_page_says_why_and_keeps_the_owner(self) -> None:
        self.login(self.alice)
        url = f"/p/p1/members/{self.alice_m.pk}/"
        r = self.client.post(f"{url}role/", {"role": "viewer"}, follow=True)
        self.assertContains(r, "needs at least one owner")
        r = self.client.post(f"{url}remove/", follow=True)
        self.assertContains(r, "needs at least one owner")
        self.assertEqual(self.owners(), ["alice"])


@unittest.skipUnless(
    connection.vendor == "postgresql", "row locks need PostgreSQL (SQLite locks the whole file)"
)
class OwnerRowLockTestCase(CastMixin, TransactionTestCase):
    """Alice and bob, both owners, demote each other at the same moment."""

    def waiting_for_a_lock(self) -> bool:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_stat_clear_snapshot()")
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            return cursor.fetchone()[0] > 0

    def test_two_owners_demoting_each_other_at_once_leave_an_owner(self) -> None:
        Membership.objects.filter(project=self.p1, user=self.bob).update(role=OWNER)
        alice_m = Membership.objects.get(project=self.p1, user=self.alice)
        bob_m = Membership.objects.get(project=self.p1, user=self.bob)
        outcome: dict[str, str] = {}

        def bob_demotes_alice() -> None:
            try:
                change_role(membership=alice_m, role="viewer", by=self.bob)
                outcome["bob"] = "demoted alice"
            except (LastOwnerError, PermissionDenied) as e:
                outcome["bob"] = f"refused: {e}"
            finally:
                connections.close_all()

        bob = threading.Thread(target=bob_demotes_alice)
        with transaction.atomic():  # alice's demotion of bob, not committed yet
            change_role(membership=bob_m, role="viewer", by=self.alice)
            bob.start()
            deadline = time.monotonic() + 10
            while bob.is_alive() and not self.waiting_for_a_lock():
                self.assertLess(time.monotonic(), deadline, "bob neither finished nor waited")
                time.sleep(0.02)
            # Bob's transaction waits on the owner rows alice holds (without the lock it would
            # already have demoted alice, seeing bob still an owner).
            self.assertTrue(bob.is_alive(), outcome)
        bob.join(10)
        self.assertTrue(outcome["bob"].startswith("refused"), outcome)
        owners = Membership.objects.filter(project=self.p1, role=OWNER)
        self.assertEqual([m.user for m in owners], [self.alice])


# --- 2. trace-set exports --------------------------------------------------------------------


class TraceSetExportTestCase(WebTestCase):
    def setUp(self) -> None:
        super().setUp()
        self.bootstrap_run = self.make_run()
        self.make_trace(self.bootstrap_run, 0)
        self.trace_set = trace_sets.freeze_trace_set(
            run=self.bootstrap_run, user=self.alice, selection="all"
        )
        self.base = f"/p/p1/runs/{self.bootstrap_run.pk}/review/sets/{self.trace_set.pk}/export"

    def test_only_csv_and_jsonl_are_served_under_a_server_built_name(self) -> None:
        self.login(self.victor)
        for fmt in ("csv", "jsonl"):
            r = self.client.get(f"{self.base}.{fmt}")
            self.assertEqual(r.status_code, 200)
            self.assertEqual(
                r["Content-Disposition"],
                f'attachment; filename="p1-run{self.bootstrap_run.pk}-set{self.trace_set.version}.{fmt}"',
            )
        for fmt in (
            "html",
            "svg",
            "exe",
            "csv.html",
            'csv"; x="y',
            "csv%0d%0aSet-Cookie:x=1",
            "CSV",
        ):
            with self.subTest(fmt=fmt):
                r = self.client.get(f"{self.base}.{fmt}")
                self.assertEqual(r.status_code, 404)
                self.assertNotIn("Content-Disposition", r)

    def test_query_parameters_do_not_change_the_name(self) -> None:
        self.login(self.victor)
        r = self.client.get(f"{self.base}.csv", {"filename": "evil.html", "fmt": "html"})
        self.assertEqual(r["Content-Type"], "text/csv; charset=utf-8")
        self.assertIn(f'filename="p1-run{self.bootstrap_run.pk}-set', r["Content-Disposition"])
        self.assertTrue(r["Content-Disposition"].endswith('.csv"'))

    def test_another_projects_owner_gets_404(self) -> None:
        self.client.force_login(self.charlie)
        self.assertEqual(self.client.get(f"{self.base}.csv").status_code, 404)


# --- 3. malformed numbers ----------------------------------------------------------------------


class MalformedNumbersTestCase(WebTestCase):
    """Out-of-range and non-numeric values: a form error, a 400 or a 404, never a 500 (the test
    client re-raises a view's exception, so a crash fails the test)."""

    def setUp(self) -> None:
        super().setUp()
        self.login(self.bob)  # an operator

    def test_upload_split_seed(self) -> None:
        for seed in (HUGE, str(2**31), "abc"):
            with self.subTest(seed=seed):
                r = self.client.post(
                    "/p/p1/trainsets/upload/",
                    {
                        "file": SimpleUploadedFile("t.jsonl", b'{"text": "a", "label": "b"}\n'),
                        "dev_ratio": "0.2",
                        "split_seed": seed,
                    },
                )
                self.assertEqual(r.status_code, 400)
                self.assertIn("split_seed", r.context["form"].errors)
        self.assertFalse(Trainset.objects.exists())

    def test_resplit_seed(self) -> None:
        trainset = self.make_trainset()
        for seed in (HUGE, str(-(2**31) - 1), "abc"):
            with self.subTest(seed=seed):
                r = self.client.post(
                    f"/p/p1/trainsets/{trainset.pk}/split/",
                    {"dev_ratio": "0.5", "split_seed": seed},
                    follow=True,
                )
                self.assertContains(r, "split_seed:")
        trainset.refresh_from_db()
        self.assertEqual(trainset.split_seed, 0)
        self.client.post(
            f"/p/p1/trainsets/{trainset.pk}/split/", {"dev_ratio": "0.5", "split_seed": 2**31 - 1}
        )
        trainset.refresh_from_db()
        self.assertEqual(trainset.split_seed, 2**31 - 1)

    def test_fine_tune_hyperparameters(self) -> None:
        from tests.test_review_sets import form_data

        run = self.make_run()
        self.make_trace(run, 0, review_state="approved")
        student = self.make_model("student")
        for field in ("seed", "epochs", "max_steps", "batch_size", "max_seq_length", "lora_r"):
            for value in (HUGE, "abc"):
                with self.subTest(field=field, value=value):
                    r = self.client.post(
                        f"/p/p1/runs/{run.pk}/finetune/", form_data(student.pk, **{field: value})
                    )
                    self.assertEqual(r.status_code, 400)
                    self.assertIn(field, r.context["form"].errors)
        for field in ("learning_rate", "warmup_ratio"):
            for value in ("1e999", "nan", "abc"):
                with self.subTest(field=field, value=value):
                    r = self.client.post(
                        f"/p/p1/runs/{run.pk}/finetune/", form_data(student.pk, **{field: value})
                    )
                    self.assertIn(field, r.context["form"].errors)
        self.assertFalse(FinetuneJob.objects.exists())

    def test_fine_tune_preview_trace_set(self) -> None:
        run = self.make_run()
        for value in (HUGE, "²", "abc"):
            with self.subTest(value=value):
                r = self.client.get(f"/p/p1/runs/{run.pk}/finetune/preview/", {"trace_set": value})
                self.assertEqual(r.status_code, 200)

    def test_bootstrap_run_numbers(self) -> None:
        from tests.test_run_forms import run_post

        setup = {
            "trainset": self.make_trainset().pk,
            "program_version": self.make_program().pk,
            "teacher": self.make_model("teacher").pk,
        }
        for field in ("num_threads", "limit", "num_demos", "demo_seed"):
            for value in (HUGE, "abc"):
                with self.subTest(field=field, value=value):
                    r = self.client.post("/p/p1/runs/new/", run_post(setup, **{field: value}))
                    self.assertEqual(r.status_code, 400)
                    self.assertIn(field, r.context["form"].errors)
        self.assertFalse(BootstrapRun.objects.exists())

    def test_run_estimate(self) -> None:
        for field in ("trainset", "program_version", "limit", "num_demos"):
            for value in NOT_NUMBERS:
                with self.subTest(field=field, value=value):
                    r = self.client.get("/p/p1/runs/estimate/", {field: value})
                    self.assertEqual(r.status_code, 200)
        r = self.client.get("/p/p1/runs/new/", {"trainset": HUGE})
        self.assertEqual(r.status_code, 200)

    def test_program_module_count(self) -> None:
        from tests.test_programs import CLASSIFY, form_post

        for total in ("abc", HUGE, "-5", "100000"):
            with self.subTest(total=total):
                data = form_post("s", CLASSIFY)
                data["modules-TOTAL_FORMS"] = total
                r = self.client.post("/p/p1/programs/new/", data)
                self.assertEqual(r.status_code, 400)
                r = self.client.post("/p/p1/programs/new/", {**data, "add_module": "1"})
                self.assertEqual(r.status_code, 200)
                rows = re.findall(rb'name="modules-\d+-signature"', r.content)
                self.assertLessEqual(len(rows), 21)
                r = self.client.post("/p/p1/programs/validate/", data)
                self.assertEqual(r.status_code, 200)
                r = self.client.get("/p/p1/programs/module-row/", {"modules-TOTAL_FORMS": total})
                self.assertEqual(r.status_code, 200)

    def test_review_filters_page_and_threshold(self) -> None:
        run = self.make_run()
        self.make_trace(run, 0)
        queue = f"/p/p1/runs/{run.pk}/review/"
        for value in NOT_NUMBERS:
            with self.subTest(value=value):
                for params in ({"min": value}, {"max": value}, {"page": value}):
                    self.assertEqual(self.client.get(queue, params).status_code, 200)
                r = self.client.get(f"{queue}threshold/", {"t": value})
                self.assertEqual(r.status_code, 200)
                r = self.client.post(f"{queue}bulk/", {"action": "approve_above", "t": value})
                self.assertEqual(r.status_code, 302)

    def test_review_required_approvals(self) -> None:
        run = self.make_run()
        for value in (*NOT_NUMBERS, "9" * 5000, "0", "21"):
            with self.subTest(value=value[:30]):
                r = self.client.post(
                    f"/p/p1/runs/{run.pk}/review/settings/",
                    {"required_approvals": value},
                    follow=True,
                )
                self.assertContains(r, "Required approvals")
        run.refresh_from_db()
        self.assertEqual(run.required_approvals, 1)

    def test_review_edit_of_a_number_field(self) -> None:
        run = self.make_run()
        signature = signature_to_dict(
            dspy.Signature("text -> confidence: float, votes: int", "Rate it.")
        )
        call: dict[str, Any] = {
            "predictor": "rate",
            "signature": signature,
            "inputs": {"text": "a"},
            "outputs": {"confidence": 0.5, "votes": 3},
        }
        call["messages"] = call_messages(call)
        trace = Trace.objects.create(
            run=run,
            example_index=0,
            inputs={"text": "a"},
            outputs=dict(call["outputs"]),
            calls=[call],
            score=1.0,
            passed=True,
            parsed=True,
        )
        url = f"/p/p1/runs/{run.pk}/review/{trace.pk}/edit/"
        for field, value in (
            ("confidence", "1e999"),
            ("confidence", "nan"),
            ("confidence", "abc"),
            ("votes", "9" * 5000),
            ("votes", "1.5"),
        ):
            with self.subTest(field=field, value=value[:30]):
                r = self.client.post(url, {f"field:{field}": value})
                self.assertContains(r, f"{field}:", status_code=400)
        trace.refresh_from_db()
        self.assertIsNone(trace.edited_outputs or None)

    def test_ids_in_urls(self) -> None:
        for url in (
            f"/p/p1/runs/{HUGE}/",
            f"/p/p1/runs/{HUGE}/review/",
            f"/p/p1/trainsets/{HUGE}/",
            f"/p/p1/programs/{HUGE}/",
            f"/p/p1/programs/1/v/{HUGE}/",
            f"/p/p1/jobs/{HUGE}/",
            f"/p/p1/members/{HUGE}/remove/",
        ):
            with self.subTest(url=url):
                self.client.force_login(self.alice)
                method = self.client.post if url.endswith("remove/") else self.client.get
                self.assertEqual(method(url).status_code, 404)


# --- 4. login throttling -----------------------------------------------------------------------


class LoginThrottleTestCase(WebTestCase):
    def sign_in(self, username: str, password: str, address: str = "10.0.0.1") -> int:
        r = Client(REMOTE_ADDR=address).post(
            "/accounts/login/", {"username": username, "password": password}
        )
        return r.status_code

    def fail_logins(self, username: str, times: int, address: str = "10.0.0.1") -> None:
        """``times`` wrong passwords; the one that reaches the limit is answered with the lockout."""
        for _ in range(times):
            self.assertIn(self.sign_in(username, "wrong", address), (200, 429))

    def test_the_settings_throttle_by_user_and_by_address(self) -> None:
        self.assertEqual(settings.AUTHENTICATION_BACKENDS[0], "axes.backends.AxesStandaloneBackend")
        self.assertEqual(settings.MIDDLEWARE[-1], "axes.middleware.AxesMiddleware")
        self.assertEqual(set(settings.AXES_LOCKOUT_PARAMETERS), {"username", "ip_address"})
        self.assertGreaterEqual(settings.AXES_FAILURE_LIMIT, 3)
        self.assertGreater(settings.AXES_COOLOFF_TIME.total_seconds(), 0)

    def test_failed_logins_for_a_user_lock_it_from_any_address(self) -> None:
        limit = settings.AXES_FAILURE_LIMIT
        self.fail_logins("alice", limit - 1, "10.0.0.1")
        self.assertEqual(self.sign_in("alice", "password", "10.0.0.9"), 302)  # not locked yet
        self.fail_logins("alice", 1, "10.0.0.1")
        # The right password no longer helps, from this address or another.
        self.assertEqual(self.sign_in("alice", "password", "10.0.0.1"), 429)
        self.assertEqual(self.sign_in("alice", "password", "10.0.0.2"), 429)

    def test_failed_logins_from_an_address_lock_other_usernames_there(self) -> None:
        self.fail_logins("alice", settings.AXES_FAILURE_LIMIT, "10.0.0.1")
        self.assertEqual(self.sign_in("bob", "password", "10.0.0.1"), 429)
        self.assertEqual(self.sign_in("nobody", "x", "10.0.0.1"), 429)
        self.assertEqual(self.sign_in("bob", "password", "10.0.0.3"), 302)

    def test_spraying_many_usernames_from_one_address_is_locked_too(self) -> None:
        for i in range(settings.AXES_FAILURE_LIMIT):
            self.assertIn(self.sign_in(f"guess{i}", "password", "10.0.0.1"), (200, 429))
        self.assertEqual(self.sign_in("victor", "password", "10.0.0.1"), 429)

    def test_signing_in_to_my_own_account_between_guesses_does_not_reset_the_count(self) -> None:
        """Charlie guesses alice's password, and signs in as himself after each wrong guess."""
        for _ in range(settings.AXES_FAILURE_LIMIT):
            self.assertIn(self.sign_in("alice", "guess", "10.0.0.7"), (200, 429))
            self.assertIn(self.sign_in("charlie", "password", "10.0.0.7"), (302, 429))
        self.assertEqual(self.sign_in("alice", "password", "10.0.0.7"), 429)
        self.assertEqual(self.sign_in("alice", "password", "10.0.0.8"), 429)

    def test_a_locked_out_user_gets_a_clear_page(self) -> None:
        self.fail_logins("alice", settings.AXES_FAILURE_LIMIT)
        r = Client(REMOTE_ADDR="10.0.0.1").post(
            "/accounts/login/", {"username": "alice", "password": "password"}
        )
        self.assertEqual(r.status_code, 429)
        self.assertTemplateUsed(r, "registration/locked_out.html")
        self.assertContains(r, "Sign-in paused", status_code=429)
        minutes = int(settings.AXES_COOLOFF_TIME.total_seconds() // 60)
        self.assertContains(r, f"for {minutes} minutes", status_code=429)
        self.assertNotIn("_auth_user_id", r.client.session)

    def test_the_login_page_still_signs_in_and_says_when_a_password_is_wrong(self) -> None:
        r = Client(REMOTE_ADDR="10.0.0.5").post(
            "/accounts/login/", {"username": "bob", "password": "nope"}
        )
        self.assertContains(r, "Please enter a correct username and password")
        self.assertEqual(self.sign_in("bob", "password", "10.0.0.5"), 302)


# --- 5. "add member" does not reveal usernames -------------------------------------------------


def _page(content: bytes, username: str) -> bytes:
    """The response with the typed name and the per-response CSRF token taken out."""
    content = re.sub(rb'name="csrfmiddlewaretoken" value="[^"]+"', b"", content)
    content = re.sub(rb'"x-csrftoken": "[^"]+"', b"", content)
    return content.replace(username.encode(), b"NAME")


class MemberAddDisclosureTestCase(WebTestCase):
    def add(self, username: str, project: str = "p1") -> tuple[int, bytes]:
        r = self.client.post(f"/p/{project}/members/add/", {"username": username, "role": "viewer"})
        return r.status_code, _page(r.content, username)

    def test_an_unrelated_user_looks_exactly_like_a_missing_one(self) -> None:
        """Alice (p1's owner) probes for charlie, who shares no project with her."""
        self.login(self.alice)
        existing = self.add("charlie")
        missing = self.add("zzzzzzz")  # same length as charlie: nothing else may differ
        self.assertEqual(existing[0], 400)
        self.assertEqual(existing, missing)
        self.assertIn(b"No user named", existing[1])
        self.assertIsNone(self.p1.role_of(self.charlie))

    def test_charlie_probing_for_p1_members_from_his_own_project_learns_nothing(self) -> None:
        """Charlie owns p2; alice and rita exist but share no project with him."""
        self.client.force_login(self.charlie)
        for name in ("alice", "rita"):
            existing = self.add(name, project="p2")
            self.assertEqual(existing, self.add("x" * len(name), project="p2"))
            self.assertEqual(existing[0], 400)
        self.assertEqual(self.p2.memberships.count(), 1)

    def test_someone_who_shares_a_project_can_be_added(self) -> None:
        Membership.objects.create(project=self.p2, user=self.alice, role="viewer")
        self.login(self.alice)
        r = self.client.post("/p/p1/members/add/", {"username": "charlie", "role": "reviewer"})
        self.assertRedirects(r, "/p/p1/members/")
        self.assertEqual(self.p1.role_of(self.charlie), "reviewer")

    def test_an_administrator_may_add_anyone(self) -> None:
        self.alice.is_superuser = True
        self.alice.save()
        self.login(self.alice)
        r = self.client.post("/p/p1/members/add/", {"username": "charlie", "role": "viewer"})
        self.assertRedirects(r, "/p/p1/members/")
