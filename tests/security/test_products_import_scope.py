"""H5: the product import honours the data scope. An operator of department A who imports a
product JSON naming department B's product, even with `update=true&migrate=true`, gets the
answer of a taken identifier; B's product, its model and its stored time series stay."""

from __future__ import annotations

import time

import pytest

from tests.security.scoped_operator import jwt_client
from tests.system.conftest import Org, make_product
from webapp.products.models import Product
from webapp.telemetry.backends import Point, get_backend

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("commit_hooks")]

PERMS = ("products.view_product", "products.add_product", "products.change_product")
IMPORT = "/api/v1/products/import/"


def store_point(product: Product) -> None:
    backend = get_backend()
    backend.ensure_schema(product)
    ts = int(time.time() * 1000)
    backend.write([Point(product=product.identifier, service="env", device="dev-b", ts=ts,
                         received=ts, values={"temperature": 21.5})])


@pytest.fixture
def org(redis_prefix):
    return Org()


def test_import_with_update_cannot_reach_another_departments_product(org):
    """The review's exploit: disabling B's product and dropping its data through an import."""
    theirs = make_product("pb", org.b)
    store_point(theirs)
    alice = org.user("alice", org.a, PERMS, scope="department_and_below")
    client = jwt_client(alice)

    attack = {"identifier": "pb", "name": "Taken", "status": "disabled", "services": []}
    refused = client.post(f"{IMPORT}?update=true&migrate=true", attack, format="json")
    assert refused.status_code == 409, refused.json()
    assert refused.json() == {"code": "duplicate", "detail": "product 'pb' already exists"}

    # Without update the answer is the same: an out-of-scope product is only a taken name.
    plain = client.post(IMPORT, attack, format="json")
    assert (plain.status_code, plain.json()) == (409, refused.json())

    theirs.refresh_from_db()
    assert theirs.status == "enabled"
    assert list(theirs.services.values_list("code", flat=True)) == ["env"]
    assert get_backend().has_data(theirs, "env", "temperature")


def test_import_with_update_still_works_in_scope(org):
    """A's own product is replaced as before; a new product lands in the importer's
    department, so the importer sees it afterwards."""
    make_product("pa", org.a1)
    alice = org.user("alice", org.a, PERMS, scope="department_and_below")
    client = jwt_client(alice)

    done = client.post(f"{IMPORT}?update=true&migrate=true",
                       {"identifier": "pa", "name": "Mine", "status": "disabled",
                        "services": []},
                       format="json")
    assert done.status_code == 200, done.json()
    assert Product.objects.get(identifier="pa").status == "disabled"

    created = client.post(IMPORT, {"identifier": "pa-new", "name": "New", "services": []},
                          format="json")
    assert created.status_code == 201, created.json()
    assert Product.objects.get(identifier="pa-new").department == org.a
    assert client.get("/api/v1/products/pa-new/").status_code == 200
