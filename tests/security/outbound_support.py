"""Shared by the outbound-destination security tests (test_outbound_*.py)."""

from __future__ import annotations

from typing import Any

from tests.system.conftest import login


def jwt_client(user: Any) -> Any:
    """An APIClient holding a JWT of `user`, obtained through `POST /api/v1/auth/token/`."""
    from rest_framework.test import APIClient

    client = APIClient()
    response = login(client, user.username)
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client
