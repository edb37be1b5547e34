"""Project members: listed to every member, added and changed by owners only; the project always
keeps an owner (a row lock when two owners demote each other at once); and "add member" does not
reveal which usernames exist."""

from __future__ import annotations

import re
import threading
import time
import unittest

from django.core.exceptions import PermissionDenied
from django.db import connection, connections, transaction
from django.test import TransactionTestCase

from jobs.models import Membership
from jobs.services.projects import LastOwnerError, change_role, remove_member
from tests.base import CastMixin
from tests.web import READ_ALL, WebTestCase

OWNER = Membership.Role.OWNER


class MembersTestCase(WebTestCase):
    def test_members_are_listed_to_every_member(self) -> None:
        self.assert_roles("get", "/p/p1/members/", READ_ALL)
        self.login(self.victor)
        r = self.client.get("/p/p1/members/")
        self.assertContains(r, "rita")
        self.assertNotContains(r, "Add a member")

    def test_only_the_owner_adds_members(self) -> None:
        Membership.objects.create(project=self.p2, user=self.alice, role="viewer")  # she knows him
        data = {"username": "charlie", "role": "reviewer"}
        self.assert_roles(
            "post",
            "/p/p1/members/add/",
            {"operator": 403, "reviewer": 403, "viewer": 403, "outsider": 404},
            data,
        )
        self.assertFalse(Membership.objects.filter(project=self.p1, user=self.charlie).exists())
        self.login(self.alice)
        r = self.client.post("/p/p1/members/add/", data)
        self.assertRedirects(r, "/p/p1/members/")
        self.assertEqual(self.p1.role_of(self.charlie), "reviewer")

    def test_adding_an_unknown_or_existing_user_is_refused(self) -> None:
        self.login(self.alice)
        r = self.client.post("/p/p1/members/add/", {"username": "nobody", "role": "viewer"})
        self.assertContains(r, "No user named", status_code=400)
        r = self.client.post("/p/p1/members/add/", {"username": "bob", "role": "viewer"})
        self.assertContains(r, "already a member", status_code=400)

    def test_the_owner_changes_roles_and_removes_members(self) -> None:
        rita = Membership.objects.get(project=self.p1, user=self.rita)
        self.assert_roles(
            "post",
            f"/p/p1/members/{rita.pk}/role/",
            {"operator": 403, "viewer": 403, "outsider": 404},
            {"role": "owner"},
        )
        self.login(self.alice)
        self.client.post(f"/p/p1/members/{rita.pk}/role/", {"role": "operator"})
        self.assertEqual(self.p1.role_of(self.rita), "operator")
        self.client.post(f"/p/p1/members/{rita.pk}/remove/")
        self.assertIsNone(self.p1.role_of(self.rita))
        self.assertEqual(self.client.get("/p/p1/models/").status_code, 200)

    def test_a_member_of_another_project_cannot_be_touched(self) -> None:
        charlie = Membership.objects.get(project=self.p2, user=self.charlie)
        self.login(self.alice)
        self.assertEqual(self.client.post(f"/p/p1/members/{charlie.pk}/remove/").status_code, 404)

    def test_the_last_owner_cannot_leave_or_be_demoted(self) -> None:
        alice = Membership.objects.get(project=self.p1, user=self.alice)
        self.login(self.alice)
        self.client.post(f"/p/p1/members/{alice.pk}/role/", {"role": "viewer"})
        self.client.post(f"/p/p1/members/{alice.pk}/remove/")
        self.assertEqual(self.p1.role_of(self.alice), "owner")

    def test_member_posts_need_the_csrf_token(self) -> None:
        Membership.objects.create(project=self.p2, user=self.alice, role="viewer")  # she knows him
        client, token = self.csrf_client(self.alice)
        data = {"username": "charlie", "role": "viewer"}
        self.assertEqual(client.post("/p/p1/members/add/", data).status_code, 403)
        self.assertEqual(
            client.post("/p/p1/members/add/", {**data, "csrfmiddlewaretoken": token}).status_code,
            302,
        )
        rita = Membership.objects.get(project=self.p1, user=self.rita)
        self.assertEqual(
            client.post(f"/p/p1/members/{rita.pk}/role/", {"role": "viewer"}).status_code, 403
        )
        self.assertEqual(client.post(f"/p/p1/members/{rita.pk}/remove/").status_code, 403)
        self.assertEqual(client.post("/", {"name": "x"}).status_code, 403)


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
