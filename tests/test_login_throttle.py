"""Login throttling (django-axes): failed sign-ins lock a username from any address and an
address for any username, and the locked-out page says for how long."""

from __future__ import annotations

from django.conf import settings
from django.test import Client

from tests.web import WebTestCase


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
