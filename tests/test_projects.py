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
