"""Project API keys: made and revoked by owners on /p/<slug>/keys/, stored hashed, shown once;
how the API authenticates them (Bearer), keeps them in their project, caps their rights, throttles
them; and CSRF, which applies to session requests and not to key requests."""

from __future__ import annotations

import hashlib
import re
from datetime import timedelta

from django.core.cache import cache
from django.test import Client, override_settings
from django.utils.timezone import now

from jobs.models import ApiKey, Membership, Program
from jobs.services import api_keys
from tests.api_client import ApiTestCase
from tests.base import SENTIMENT_SPEC
from tests.web import WebTestCase

SPEC = {"spec": SENTIMENT_SPEC}


class KeysPageTestCase(WebTestCase):
    def test_only_owners_see_the_keys_page(self) -> None:
        self.assert_roles(
            "get",
            "/p/p1/keys/",
            {"owner": 200, "operator": 403, "reviewer": 403, "viewer": 403, "outsider": 404},
        )
        self.assert_roles(
            "post",
            "/p/p1/keys/new/",
            {"operator": 403, "viewer": 403, "outsider": 404},
            {"name": "x", "scope": "read"},
        )
        self.assertFalse(ApiKey.objects.exists())

    def test_a_new_key_is_shown_once_and_stored_hashed(self) -> None:
        self.login(self.alice)
        r = self.client.post("/p/p1/keys/new/", {"name": "nightly", "scope": "read_write"})
        self.assertEqual(r.status_code, 201)
        self.assertIn("no-store", r["Cache-Control"])
        raw = re.search(r'id="api-key">(bft_[\w-]+)<', r.content.decode())
        assert raw is not None
        key = ApiKey.objects.get()
        self.assertEqual(
            (key.name, key.scope, key.created_by), ("nightly", "read_write", self.alice)
        )
        self.assertEqual(key.secret_hash, hashlib.sha256(raw.group(1).encode()).hexdigest())
        self.assertNotIn(raw.group(1), str(ApiKey.objects.values().get()))
        page = self.client.get("/p/p1/keys/")
        self.assertNotContains(page, raw.group(1))
        self.assertContains(page, f"bft_{key.prefix}_")
        self.assertContains(page, "never")  # not used yet

    def test_a_bad_form_names_the_field(self) -> None:
        self.login(self.alice)
        r = self.client.post("/p/p1/keys/new/", {"name": "", "scope": "admin"})
        self.assertEqual(r.status_code, 400)
        self.assertFalse(ApiKey.objects.exists())

    def test_revoking_stops_the_key_at_once(self) -> None:
        key, raw = api_keys.create_api_key(project=self.p1, user=self.alice, name="k", scope="read")
        headers = {"Authorization": f"Bearer {raw}"}
        self.assertEqual(
            Client().get("/api/v1/projects/p1/runs/", headers=headers).status_code, 200
        )
        self.login(self.alice)
        r = self.client.post(f"/p/p1/keys/{key.pk}/revoke/")
        self.assertRedirects(r, "/p/p1/keys/")
        key.refresh_from_db()
        self.assertEqual(key.revoked_by, self.alice)
        self.assertEqual(
            Client().get("/api/v1/projects/p1/runs/", headers=headers).status_code, 401
        )
        # another project's owner cannot touch it
        self.login(self.charlie)
        self.assertEqual(self.client.post(f"/p/p1/keys/{key.pk}/revoke/").status_code, 404)

    def test_the_nav_shows_the_page_to_owners(self) -> None:
        self.login(self.alice)
        self.assertContains(self.client.get("/p/p1/"), "/p/p1/keys/")
        self.login(self.bob)
        self.assertNotContains(self.client.get("/p/p1/"), "/p/p1/keys/")


class KeyAuthTestCase(ApiTestCase):
    URL = "/api/v1/projects/p1/programs/"

    def test_no_key_is_401_with_a_bearer_challenge(self) -> None:
        r = self.api("get", self.URL, key=None)
        self.assertEqual(r.status_code, 401)
        self.assertEqual(r["WWW-Authenticate"], 'Bearer realm="api"')
        self.assertEqual(r.json()["code"], "not_authenticated")

    def test_a_wrong_malformed_or_revoked_key_is_401(self) -> None:
        key = ApiKey.objects.get(name="ci")
        for raw in ("nope", self.rw[:-2] + "xx", f"bft_{key.prefix}_", "bft_ABCDEFGH_x"):
            with self.subTest(raw=raw):
                self.assertEqual(self.api("get", self.URL, key=raw).status_code, 401)
        r = Client().get(self.URL, headers={"Authorization": f"Bearer {self.rw} extra"})
        self.assertEqual(r.status_code, 401)
        api_keys.revoke_api_key(key=key, user=self.alice)
        self.assertEqual(self.api("get", self.URL).status_code, 401)

    def test_a_key_acts_only_in_its_project(self) -> None:
        self.assertEqual(self.api("get", "/api/v1/projects/p2/programs/").status_code, 404)
        self.assertEqual(self.api("get", "/api/v1/projects/nope/programs/").status_code, 404)
        r = self.api("get", "/api/v1/projects/")
        self.assertEqual(
            [(p["slug"], p["role"]) for p in r.json()["results"]], [("p1", "operator")]
        )
        r = self.api("get", "/api/v1/projects/", key="ro")
        self.assertEqual([p["role"] for p in r.json()["results"]], ["viewer"])
        self.assertEqual(self.api("get", "/api/v1/projects/p2/").status_code, 404)

    def test_a_read_only_key_may_not_write(self) -> None:
        r = self.api("post", self.URL, SPEC, key="ro")
        self.assertEqual(r.status_code, 403)
        self.assertIn("read-only", r.json()["detail"])
        self.assertEqual(self.api("post", self.URL, SPEC).status_code, 201)

    def test_a_key_never_has_more_rights_than_its_maker_has_now(self) -> None:
        Membership.objects.filter(user=self.alice, project=self.p1).update(role="viewer")
        self.assertEqual(self.api("post", self.URL, SPEC).status_code, 403)
        self.assertEqual(self.api("get", self.URL).status_code, 200)
        Membership.objects.filter(user=self.alice, project=self.p1).delete()
        self.assertEqual(self.api("get", self.URL).status_code, 401)
        Membership.objects.create(user=self.alice, project=self.p1, role="owner")
        self.alice.is_active = False
        self.alice.save()
        self.assertEqual(self.api("get", self.URL).status_code, 401)

    def test_last_used_is_written_at_most_once_a_minute(self) -> None:
        key = ApiKey.objects.get(name="ci")
        self.assertIsNone(key.last_used_at)
        self.api("get", self.URL)
        key.refresh_from_db()
        first = key.last_used_at
        assert first is not None
        with self.assertNumQueries(2):  # the key (with its maker's role), the programs: no UPDATE
            self.api("get", self.URL)
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now() - timedelta(minutes=2))
        self.api("get", self.URL)
        key.refresh_from_db()
        assert key.last_used_at is not None
        self.assertGreater(key.last_used_at, now() - timedelta(seconds=30))

    def test_key_requests_need_no_csrf_token(self) -> None:
        client = Client(enforce_csrf_checks=True)
        r = self.api("post", self.URL, SPEC, client=client)
        self.assertEqual(r.status_code, 201)

    def test_session_requests_need_the_csrf_token(self) -> None:
        client = Client(enforce_csrf_checks=True)
        client.force_login(self.bob)
        self.assertEqual(self.api("get", self.URL, key="session", client=client).status_code, 200)
        r = self.api("post", self.URL, SPEC, key="session", client=client)
        self.assertEqual(r.status_code, 403)
        self.assertIn("CSRF", r.json()["detail"])
        self.assertFalse(Program.objects.exists())
        client.get("/")  # sets the csrftoken cookie
        token = client.cookies["csrftoken"].value
        r = self.api(
            "post", self.URL, SPEC, key="session", client=client, headers={"X-CSRFToken": token}
        )
        self.assertEqual(r.status_code, 201)

    def test_sessions_act_with_the_users_role(self) -> None:
        for user, status in ((self.victor, 403), (self.charlie, 404), (self.bob, 201)):
            client = Client()
            client.force_login(user)
            with self.subTest(user=user.username):
                r = self.api("post", self.URL, SPEC, key="session", client=client)
                self.assertEqual(r.status_code, status)

    @override_settings(BFT_API_KEY_RATE="3/min", BFT_API_USER_RATE="5/min")
    def test_each_key_is_throttled_on_its_own(self) -> None:
        cache.clear()
        try:
            codes = [self.api("get", self.URL).status_code for _ in range(4)]
            self.assertEqual(codes, [200, 200, 200, 429])
            r = self.api("get", self.URL)
            self.assertEqual(r.json()["code"], "throttled")
            self.assertIn("Retry-After", r)
            self.assertEqual(self.api("get", self.URL, key="ro").status_code, 200)
            client = Client()
            client.force_login(self.bob)
            codes = [
                self.api("get", self.URL, key="session", client=client).status_code
                for _ in range(6)
            ]
            self.assertEqual(codes, [200] * 5 + [429])
        finally:
            cache.clear()
