"""Third review: product templates had no owner. Anyone allowed to change templates could
rewrite or delete the built-in ones every department starts products from, and read or
change another department's. Built-in and shared templates (no department) are now written
by superusers only; a department's templates are seen and written within the data scope."""

from __future__ import annotations

import pytest

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.security.scoped_operator import jwt_client
from tests.system.conftest import PASSWORD
from webapp.products.models import ProductTemplate

pytestmark = pytest.mark.django_db

EDITOR = ("products.view_producttemplate", "products.add_producttemplate",
          "products.change_producttemplate", "products.delete_producttemplate",
          "products.view_product", "products.add_product")


def test_built_in_and_shared_templates_are_superuser_only(org):
    client = jwt_client(org.user("tpl", org.a, EDITOR, scope="department"))
    built_in = ProductTemplate.objects.filter(built_in=True).first() or \
        ProductTemplate.objects.create(identifier="builtin", name="B", built_in=True)
    shared = ProductTemplate.objects.create(identifier="shared", name="Shared")
    for template in (built_in, shared):
        url = f"/api/v1/product-templates/{template.identifier}/"
        assert client.get(url).status_code == 200  # still seen and usable
        changed = client.patch(url, {"services": []}, format="json")
        assert changed.status_code == 403, changed.content
        assert changed.json()["code"] == "template_shared"
        assert client.delete(url).status_code == 403
    assert ProductTemplate.objects.filter(pk__in=[built_in.pk, shared.pk]).count() == 2


def test_another_departments_templates_are_out_of_reach(org):
    client = jwt_client(org.user("tpl", org.a, EDITOR, scope="department"))
    theirs = ProductTemplate.objects.create(identifier="theirs", name="T", department=org.b)
    url = f"/api/v1/product-templates/{theirs.identifier}/"
    assert client.get(url).status_code == 404
    assert client.patch(url, {"name": "x"}, format="json").status_code == 404
    assert client.delete(url).status_code == 404
    listed = client.get("/api/v1/product-templates/?page_size=100").json()
    rows = listed["results"] if isinstance(listed, dict) else listed
    assert "theirs" not in {row["identifier"] for row in rows}
    made = client.post("/api/v1/products/", {"identifier": "p1", "name": "P",
                                             "template": "theirs"}, format="json")
    assert made.status_code == 400
    moved = client.post("/api/v1/product-templates/", {
        "identifier": "mine", "name": "M", "department": org.b.pk}, format="json")
    assert moved.status_code == 400
    theirs.refresh_from_db()
    assert theirs.name == "T"


def test_own_departments_templates_are_written(org):
    client = jwt_client(org.user("tpl", org.a, EDITOR, scope="department"))
    made = client.post("/api/v1/product-templates/", {"identifier": "mine", "name": "M"},
                       format="json")
    assert made.status_code == 201, made.content
    assert made.json()["department"] == org.a.pk
    url = "/api/v1/product-templates/mine/"
    assert client.patch(url, {"name": "N"}, format="json").status_code == 200
    assert client.delete(url).status_code == 204


def test_the_admin_refuses_shared_templates(org, client):
    shared = ProductTemplate.objects.create(identifier="shared", name="Shared")
    org.user("tpl", org.a, EDITOR, scope="department", staff=True)
    assert client.login(username="tpl", password=PASSWORD)
    base = f"/admin/products/producttemplate/{shared.pk}"
    assert client.post(f"{base}/delete/", {"post": "yes"}).status_code == 403
    assert client.post(f"{base}/change/", {"identifier": "shared", "name": "x",
                                           "services": "[]"}).status_code == 403
    shared.refresh_from_db()
    assert shared.name == "Shared"
