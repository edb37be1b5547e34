from __future__ import annotations

from jobs.models import LanguageModel, Membership, Project
from tests.web import READ_ALL, WebTestCase


class ProjectsTestCase(WebTestCase):
    def test_it_sends_anonymous_users_to_the_login_page(self) -> None:
        r = self.client.get("/p/p1/")
        self.assertRedirects(r, "/accounts/login/?next=/p/p1/")
        self.assertEqual(self.client.get("/").status_code, 302)

    def test_the_login_page_renders_and_signs_in(self) -> None:
        r = self.client.get("/accounts/login/")
        self.assertContains(r, "Sign in")
        r = self.client.post("/accounts/login/", {"username": "alice", "password": "password"})
        self.assertRedirects(r, "/", fetch_redirect_response=False)

    def test_it_logs_out_with_a_post(self) -> None:
        self.login(self.alice)
        r = self.client.post("/accounts/logout/")
        self.assertEqual(r.status_code, 302)
        self.assertEqual(self.client.get("/p/p1/").status_code, 302)

    def test_home_lists_only_my_projects_with_my_role(self) -> None:
        self.login(self.bob)
        r = self.client.get("/")
        self.assertContains(r, "/p/p1/")
        self.assertContains(r, "operator")
        self.assertNotContains(r, "/p/p2/")

    def test_any_user_can_create_a_project_and_owns_it_with_smollm2_seeded(self) -> None:
        self.login(self.victor)
        r = self.client.post("/", {"name": "Support Bot"})
        self.assertRedirects(r, "/p/support-bot/")
        project = Project.objects.get(slug="support-bot")
        self.assertEqual(project.role_of(self.victor), "owner")
        model = LanguageModel.objects.get(project=project)
        self.assertEqual((model.name, model.kind, model.fine_tunable), ("smollm2", "local", True))

    def test_it_refuses_a_duplicate_project_name(self) -> None:
        self.login(self.alice)
        r = self.client.post("/", {"name": "P1"})
        self.assertContains(r, "already exists")
        self.assertEqual(Project.objects.count(), 2)

    def test_every_member_sees_the_project_and_outsiders_get_404(self) -> None:
        self.assert_roles("get", "/p/p1/", READ_ALL)
        self.assertEqual(self.status_for(self.alice, "get", "/p/nope/"), 404)

    def test_the_switcher_lists_my_projects_and_the_nav_links_the_screens(self) -> None:
        Membership.objects.create(project=self.p2, user=self.alice, role="viewer")
        self.login(self.alice)
        r = self.client.get("/p/p1/")
        for url in (
            "/p/p2/",
            "/p/p1/models/",
            "/p/p1/trainsets/",
            "/p/p1/programs/",
            "/p/p1/runs/",
            "/p/p1/jobs/",
            "/p/p1/members/",
        ):
            self.assertContains(r, f'href="{url}"')


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
