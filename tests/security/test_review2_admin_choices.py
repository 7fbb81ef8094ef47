"""Second review: some admin pages offered every department's records in their sidebar
filters and choice lists (the user list's department filter, the notice form's users and
departments, the product filters of ACL rules, OTA packages and services): a department's
staff operator read the names of every department (customer), user and product of the
platform. They now offer only what the operator's data scope reaches."""

from __future__ import annotations

import pytest

from tests.security.rbac import org_fixture, own_cache_prefix  # noqa: F401
from tests.system.conftest import PASSWORD, make_product

pytestmark = pytest.mark.django_db

VIEWS = ("system.view_user", "system.view_notice", "system.add_notice",
         "access.view_aclrule", "ota.view_otapackage", "products.view_service")


@pytest.fixture
def staff_client(org, client):
    org.user("deskops", org.a, VIEWS, scope="department", staff=True)
    org.user("bruno-the-stranger", org.b, scope="department")
    org.b.name = "Secret Customer B"
    org.b.save()
    make_product("p-hidden-b", org.b)
    make_product("p-mine-a", org.a)
    assert client.login(username="deskops", password=PASSWORD)
    return client


@pytest.mark.parametrize("url", ["/admin/system/user/", "/admin/system/notice/add/",
                                 "/admin/access/aclrule/", "/admin/ota/otapackage/",
                                 "/admin/products/service/"])
def test_admin_pages_offer_only_what_the_scope_reaches(staff_client, url):
    page = staff_client.get(url)
    assert page.status_code == 200, url
    body = page.content.decode()
    for foreign in ("Secret Customer B", "bruno-the-stranger", "p-hidden-b",
                    "Product p-hidden-b"):
        assert foreign not in body, (url, foreign)
