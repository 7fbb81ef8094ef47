"""Dictionaries and parameters (cached), notices and messages, the department tree."""

from __future__ import annotations

import pytest
from django.test.utils import CaptureQueriesContext

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_api(org, api_as):
    from webapp.system.models import Role

    return api_as(org.user("boss", org.a, roles=[Role.objects.get(code="administrator")]))


def test_dictionary_items_are_cached_and_invalidated(admin_api, django_db_setup):
    """Items come from the cache until an item changes through the API."""
    from django.db import connection

    from webapp.system.cache import DictionaryChoiceField, dict_choices

    admin_api.post("/api/v1/dictionaries/", {"code": "colour", "name": "Colours"},
                   format="json")
    admin_api.post("/api/v1/dictionary-items/", {"dictionary": "colour", "value": "red",
                                                 "label": "Red", "order": 1}, format="json")
    assert dict_choices("colour") == [("red", "Red")]
    with CaptureQueriesContext(connection) as queries:
        assert dict_choices("colour") == [("red", "Red")]
    assert len(queries) == 0, "served from the cache"
    item = admin_api.post("/api/v1/dictionary-items/", {
        "dictionary": "colour", "value": "blue", "label": "Blue", "order": 2},
        format="json").json()
    assert dict_choices("colour") == [("red", "Red"), ("blue", "Blue")]
    admin_api.patch(f"/api/v1/dictionary-items/{item['id']}/", {"is_active": False},
                    format="json")
    assert dict_choices("colour") == [("red", "Red")]
    field = DictionaryChoiceField("colour")
    assert list(field.choices) == [("red", "Red")]
    assert admin_api.get("/api/v1/dictionaries/colour/items/").json()[0]["label"] == "Red"


def test_parameters_are_typed_cached_and_drive_the_lockout(admin_api):
    """Changing `security.login.max_failures` changes the lockout at once."""
    from rest_framework.test import APIClient

    from tests.system.conftest import login
    from webapp.system.cache import param

    assert param("security.login.max_failures") == 5
    response = admin_api.patch("/api/v1/parameters/security.login.max_failures/",
                               {"value": "2"}, format="json")
    assert response.status_code == 200
    assert param("security.login.max_failures") == 2
    client = APIClient()
    login(client, "boss", "bad")
    assert login(client, "boss", "bad").status_code == 429
    assert admin_api.delete("/api/v1/parameters/security.login.max_failures/"
                            ).json()["code"] == "builtin"


def test_publishing_a_notice_messages_its_audience(org, admin_api):
    """A notice to department A (and below) reaches A and A1 users, not B."""
    from webapp.system.models import Message

    a1_user, b_user = org.user("ann", org.a1), org.user("ben", org.b)
    notice = admin_api.post("/api/v1/notices/", {
        "title": "Maintenance", "content": "Tonight 22:00", "audience": "departments",
        "departments": [org.a.pk]}, format="json").json()
    published = admin_api.post(f"/api/v1/notices/{notice['id']}/publish/").json()
    assert published["recipients"] == 2  # boss (A) and ann (A1)
    assert Message.objects.filter(recipient=a1_user, notice_id=notice["id"]).exists()
    assert not Message.objects.filter(recipient=b_user).exists()
    again = admin_api.post(f"/api/v1/notices/{notice['id']}/publish/")
    assert again.status_code == 409 and again.json()["code"] == "already_published"


def test_messages_are_private_and_can_be_marked_read(org, api_as):
    """A user sees only their own messages; mark-read and the unread count."""
    from webapp.system import actions

    ann, ben = org.user("ann", org.a), org.user("ben", org.b)
    actions.send_message(recipients=[ann, ann, ben], title="Alarm",
                         category="alarm")
    client = api_as(ann)
    assert client.get("/api/v1/messages/unread-count/").json() == {"count": 2}
    rows = client.get("/api/v1/messages/").json()["results"]
    assert len(rows) == 2
    ben_message = ben.messages.get()
    assert client.get(f"/api/v1/messages/{ben_message.pk}/").status_code == 404
    assert client.post("/api/v1/messages/mark-read/", {"ids": [rows[0]["id"]]},
                       format="json").json() == {"count": 1}
    assert client.get("/api/v1/messages/", {"unread": True}).json()["count"] == 1


def test_department_tree_moves_subtrees(org, admin_api):
    """Moving A below B moves A1 along; a cycle is refused; a used department stays."""
    from webapp.system.models import Department

    response = admin_api.patch(f"/api/v1/departments/{org.a.pk}/", {"parent": org.b.pk},
                               format="json")
    assert response.status_code == 200
    a1 = Department.objects.get(pk=org.a1.pk)
    assert a1.path == f"/{org.b.pk}/{org.a.pk}/{org.a1.pk}/"
    cycle = admin_api.patch(f"/api/v1/departments/{org.b.pk}/", {"parent": org.a1.pk},
                            format="json")
    assert cycle.status_code == 400 and cycle.json()["code"] == "cycle"
    used = admin_api.delete(f"/api/v1/departments/{org.a.pk}/")
    assert used.status_code == 409 and used.json()["code"] == "in_use"
    tree = admin_api.get("/api/v1/departments/tree/").json()
    b_node = next(node for node in tree if node["id"] == org.b.pk)
    assert b_node["children"][0]["children"][0]["name"] == "Dept A1"


def test_builtin_roles_cannot_be_deleted(admin_api):
    """The built-in roles stay."""
    from webapp.system.models import Role

    viewer = Role.objects.get(code="viewer")
    response = admin_api.delete(f"/api/v1/roles/{viewer.pk}/")
    assert response.status_code == 409 and response.json()["code"] == "builtin"


def test_user_import_and_export_roundtrip(org):
    """Users export to CSV and import back (without passwords) with roles by code."""
    import tablib

    from webapp.system.models import User
    from webapp.system.resources import UserResource

    org.user("ann", org.a)
    dataset = tablib.Dataset(headers=["username", "email", "department", "roles"])
    dataset.append(["zoe", "zoe@example.com", "Dept B", "viewer|operator"])
    result = UserResource().import_data(dataset, dry_run=False)
    assert not result.has_errors()
    zoe = User.objects.get(username="zoe")
    assert zoe.department == org.b and not zoe.has_usable_password()
    assert set(zoe.roles.values_list("code", flat=True)) == {"viewer", "operator"}
    exported = UserResource().export().csv
    assert "ann" in exported and "password" not in exported
