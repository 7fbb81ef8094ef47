"""An API client signed in as a (scoped) operator is: through `POST /api/v1/auth/token/`."""

from __future__ import annotations

from typing import Any

from tests.system.conftest import PASSWORD, login


def jwt_client(user: Any, password: str = PASSWORD) -> Any:
    """An APIClient holding a JWT of `user`, obtained by logging in with `password`."""
    from rest_framework.test import APIClient

    client = APIClient()
    response = login(client, user.username, password)
    assert response.status_code == 200, response.content
    client.credentials(HTTP_AUTHORIZATION=f"Bearer {response.json()['access']}")
    return client
