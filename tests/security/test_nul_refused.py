"""A NUL character in a query string or a form is refused with 400, on every page and API
(PostgreSQL refuses NUL in text parameters; a view passing one on answered 500)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize("url", ["/ota/?product=%00", "/products/x/dashboard/?device=a%00b",
                                 "/api/v1/devices/?search=%00", "/login/?next=%00"])
def test_a_nul_in_the_query_string_is_a_400(admin_client, url):
    response = admin_client.get(url)
    assert response.status_code == 400
    assert b"NUL" in response.content


def test_a_nul_in_a_form_is_a_400(admin_client):
    response = admin_client.post("/profile/", "nickname=a%00b",
                                 content_type="application/x-www-form-urlencoded")
    assert response.status_code == 400


def test_a_plain_request_passes(admin_client):
    assert admin_client.get("/ota/?product=thermo").status_code == 200
