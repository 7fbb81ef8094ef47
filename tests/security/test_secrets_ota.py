"""C2: OTA download links are signed with the installation's own key and a salt of their own.
With the former public development key anyone could sign a link to any firmware; such a link
(and one signed without the salt) is refused now."""

from __future__ import annotations

import pytest
from django.conf import settings
from django.core import signing
from django.core.files.uploadedfile import SimpleUploadedFile

from webapp.ota import actions

pytestmark = pytest.mark.django_db

FORMER_DEV_KEY = "thinglinks-dev-insecure-secret-key-change-me"


@pytest.fixture
def package(api, redis_prefix, thermo_payload, settings, tmp_path):
    settings.MEDIA_ROOT = tmp_path
    assert api.post("/api/v1/products/", thermo_payload, format="json").status_code == 201
    response = api.post("/api/v1/ota/packages/", {
        "product": "thermo", "name": "fw", "package_type": "firmware", "version": "2.0.0",
        "file": SimpleUploadedFile("fw.bin", b"firmware" * 100)}, format="multipart")
    assert response.status_code == 201, response.json()
    return response.json()["id"]


def download(client, token: str) -> int:
    return client.get(f"/api/v1/ota/download/{token}/").status_code


def test_links_signed_with_the_public_key_or_without_the_salt_are_refused(client, package):
    grant = {"p": package, "d": "anyone", "t": None}
    assert download(client, signing.dumps(grant, salt=actions.DOWNLOAD_SALT, compress=True)) \
        == 200  # the installation's own key and salt
    forged = signing.dumps(grant, key=FORMER_DEV_KEY, salt=actions.DOWNLOAD_SALT,
                           compress=True)
    assert download(client, forged) == 404
    unsalted = signing.dumps(grant, compress=True)  # e.g. a token made for another purpose
    assert download(client, unsalted) == 404
    assert settings.SECRET_KEY != FORMER_DEV_KEY
