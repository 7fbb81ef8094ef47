"""OTA in the console: packages and campaigns in scope, uploads through the OTA actions (size
budget, the uploader's SHA-256, duplicate versions), campaigns for devices in reach only, the
progress JSON, start and cancel, and the permissions each page needs."""

from __future__ import annotations

import hashlib

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile

from tests.console.conftest import create_device
from tests.console.test_pages import text
from webapp.ota.models import OtaCampaign, OtaPackage, OtaTask

pytestmark = pytest.mark.django_db

OTA_PERMISSIONS = (
    "products.view_product", "devices.view_device", "ota.view_otapackage",
    "ota.add_otapackage", "ota.view_otacampaign", "ota.add_otacampaign",
    "ota.change_otacampaign", "ota.view_otatask",
)
FIRMWARE = b"\x7fELF firmware 2.0" * 64


@pytest.fixture(autouse=True)
def _media(settings, tmp_path):
    settings.MEDIA_ROOT = str(tmp_path)


@pytest.fixture
def otto(world):
    return world.org.user("otto", world.org.a, OTA_PERMISSIONS, scope="department")


@pytest.fixture
def bert(world):
    return world.org.user("bert", world.org.b, OTA_PERMISSIONS, scope="department")


def upload(client, product="thermo-a", version="2.0.0", content=FIRMWARE, **extra):
    return client.post("/ota/packages/upload/", {
        "product": product, "name": "Main firmware", "package_type": "firmware",
        "version": version, "file": SimpleUploadedFile("fw.bin", content), **extra})


def package_of(product, version="1.0.0"):
    from webapp.ota import actions

    return actions.create_package(acting_user=None, product=product, name="fw",
                                  version=version, package_type="firmware",
                                  upload=SimpleUploadedFile("fw.bin", FIRMWARE))


def test_upload_stores_the_package_with_its_checksums(world, client_of, otto):
    client = client_of(otto)
    digest = hashlib.sha256(FIRMWARE).hexdigest()
    response = upload(client, checksum=digest.upper())
    assert response.status_code == 302 and response["Location"] == "/ota/"
    package = OtaPackage.objects.get()
    assert (package.product, package.version, package.size, package.checksum) == (
        world.product_a, "2.0.0", len(FIRMWARE), digest)
    assert package.created_by == otto
    page = text(client.get("/ota/"))
    assert "Main firmware" in page and f'data-package="{package.pk}"' in page
    assert "uploaded (1088 bytes)" in page


def test_upload_refusals_give_their_reason(world, client_of, otto, settings):
    client = client_of(otto)
    bad = upload(client, checksum="0" * 64)
    assert bad.status_code == 400 and "the upload is damaged" in text(bad)
    malformed = upload(client, checksum="not-a-digest")
    assert malformed.status_code == 400 and "64 hexadecimal digits" in text(malformed)
    spaced = upload(client, version="2.0 beta")
    assert spaced.status_code == 400 and "no spaces" in text(spaced)
    empty = upload(client, content=b"")
    assert empty.status_code == 400
    settings.OTA_MAX_BYTES = 100
    big = upload(client)
    assert big.status_code == 413 and "at most 100" in text(big)
    settings.OTA_MAX_BYTES = 10_000
    assert upload(client).status_code == 302
    again = upload(client)
    assert again.status_code == 409 and "already has a firmware package 2.0.0" in text(again)
    assert OtaPackage.objects.count() == 1


def test_another_departments_product_and_packages_are_out_of_reach(world, client_of, otto):
    client = client_of(otto)
    response = upload(client, product="thermo-b")
    assert response.status_code == 400 and 'data-field="product"' in text(response)
    assert not OtaPackage.objects.exists()
    package_b = package_of(world.product_b)
    package_a = package_of(world.product_a)
    page = text(client.get("/ota/"))
    assert f'data-package="{package_a.pk}"' in page
    assert f'data-package="{package_b.pk}"' not in page
    refused = client.post("/ota/campaigns/new/", {
        "name": "Steal", "package": package_b.pk, "target_type": "product",
        "task_timeout": 3600, "start": "on"})
    assert refused.status_code == 400 and 'data-field="package"' in text(refused)
    assert not OtaCampaign.objects.exists()


def test_campaign_for_a_list_of_devices_and_its_progress(world, client_of, otto):
    package = package_of(world.product_a)
    client = client_of(otto)
    assert client.get(f"/ota/campaigns/new/?package={package.pk}").status_code == 200
    response = client.post("/ota/campaigns/new/", {
        "name": "Roll 1.0", "package": package.pk, "target_type": "devices",
        "devices": "dev-a1", "task_timeout": 600, "start": "on"})
    campaign = OtaCampaign.objects.get()
    assert response.status_code == 302 and response["Location"] == f"/ota/campaigns/{campaign.pk}/"
    assert campaign.status == "running" and campaign.task_timeout == 600
    assert campaign.created_by == otto
    task = OtaTask.objects.get(campaign=campaign)
    assert task.device == world.device_a and task.status == "pending"
    page = text(client.get(f"/ota/campaigns/{campaign.pk}/"))
    assert f'data-task="{task.pk}"' in page and "dev-a1" in page
    OtaTask.objects.filter(pk=task.pk).update(status="failed", progress=40, attempts=2,
                                              error_code="E42",
                                              error_message="<b>flash</b> write failed")
    body = client.get(f"/ota/campaigns/{campaign.pk}/progress/").json()
    assert body["status"] == "running" and body["summary"]["failed"] == 1
    assert body["summary"]["total"] == 1 and body["done_percent"] == 100
    row = body["tasks"][0]
    assert (row["device"], row["status"], row["progress"], row["attempts"]) == (
        "dev-a1", "failed", 40, 2)
    assert row["error"] == "E42 <b>flash</b> write failed"
    page = text(client.get(f"/ota/campaigns/{campaign.pk}/"))
    assert "&lt;b&gt;flash&lt;/b&gt;" in page
    assert f'data-campaign="{campaign.pk}"' in text(client.get("/ota/campaigns/"))


def test_campaign_targets_only_devices_in_reach(world, client_of, otto):
    package = package_of(world.product_a)
    # a device of product A in department B: not otto's
    create_device("dev-a9", world.product_a, world.org.b)
    client = client_of(otto)
    form = {"name": "Roll", "package": package.pk, "task_timeout": 3600, "start": "on"}
    refused = client.post("/ota/campaigns/new/", {**form, "target_type": "devices",
                                                  "devices": "dev-a1 dev-a9, dev-b1"})
    assert refused.status_code == 400
    assert "not devices of product thermo-a: dev-a9, dev-b1" in text(refused)
    assert not OtaCampaign.objects.exists()
    everyone = client.post("/ota/campaigns/new/", {**form, "target_type": "product"})
    assert everyone.status_code == 302
    assert list(OtaTask.objects.values_list("device__identifier", flat=True)) == ["dev-a1"]


def test_group_campaign_needs_a_group_in_scope(world, client_of, otto):
    from webapp.devices import actions as device_actions

    package = package_of(world.product_a)
    group_b = device_actions.create_group(data={"name": "B's", "department": world.org.b})
    group_a = device_actions.create_group(data={"name": "A's", "department": world.org.a})
    device_actions.change_members(group=group_a, add=[world.device_a], remove=[])
    client = client_of(otto)
    form = {"name": "Roll", "package": package.pk, "task_timeout": 3600,
            "target_type": "group"}
    assert client.post("/ota/campaigns/new/", form).status_code == 400
    assert client.post("/ota/campaigns/new/", {**form, "group": group_b.pk}).status_code == 400
    assert not OtaCampaign.objects.exists()
    assert client.post("/ota/campaigns/new/", {**form, "group": group_a.pk}).status_code == 302
    campaign = OtaCampaign.objects.get()
    assert campaign.status == "draft" and campaign.group == group_a
    assert client.post(f"/ota/campaigns/{campaign.pk}/start/").status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "running"
    assert client.post(f"/ota/campaigns/{campaign.pk}/cancel/").status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "cancelled"
    assert OtaTask.objects.get().status == "cancelled"
    client.post(f"/ota/campaigns/{campaign.pk}/cancel/")
    assert "already over" in text(client.get(f"/ota/campaigns/{campaign.pk}/"))


def test_another_departments_campaign_is_not_found(world, client_of, otto, bert):
    from webapp.ota import actions

    package_b = package_of(world.product_b)
    campaign_b = actions.create_campaign(acting_user=bert, package=package_b, name="B roll",
                                         target_type="product", devices=[world.device_b],
                                         start=False)
    client = client_of(otto)
    for path in (f"/ota/campaigns/{campaign_b.pk}/",
                 f"/ota/campaigns/{campaign_b.pk}/progress/"):
        assert client.get(path).status_code == 404
    for path in (f"/ota/campaigns/{campaign_b.pk}/start/",
                 f"/ota/campaigns/{campaign_b.pk}/cancel/"):
        assert client.post(path).status_code == 404
    campaign_b.refresh_from_db()
    assert campaign_b.status == "draft"
    assert f'data-campaign="{campaign_b.pk}"' not in text(client.get("/ota/campaigns/"))


def test_ota_pages_need_their_permissions(world, client_of):
    package = package_of(world.product_a)
    viewer = world.org.user("viewer", world.org.a, ("ota.view_otapackage",
                                                    "ota.view_otacampaign"),
                            scope="department")
    client = client_of(viewer)
    assert client.get("/ota/").status_code == 200
    assert 'data-testid="package-form"' not in text(client.get("/ota/"))
    assert upload(client).status_code == 403
    assert client.get("/ota/campaigns/new/").status_code == 403
    assert client.post("/ota/campaigns/new/", {"name": "x", "package": package.pk,
                                               "target_type": "product"}).status_code == 403
    from webapp.ota import actions

    campaign = actions.create_campaign(acting_user=None, package=package, name="c",
                                       target_type="product", devices=[world.device_a],
                                       start=False)
    assert client.get(f"/ota/campaigns/{campaign.pk}/").status_code == 403  # no view_otatask
    assert client.post(f"/ota/campaigns/{campaign.pk}/start/").status_code == 403
    nobody = client_of(world.nobody)
    for path in ("/ota/", "/ota/campaigns/", f"/ota/campaigns/{campaign.pk}/progress/"):
        assert nobody.get(path).status_code == 403
    assert OtaPackage.objects.count() == 1 and campaign.status == "draft"
    alice_page = text(client_of(world.alice).get("/"))
    assert 'href="/ota/"' not in alice_page
    assert 'href="/ota/"' in text(client.get("/"))


def test_retry_failed_devices_makes_a_new_campaign_over_them(world, client_of, otto, bert):
    from webapp.ota import actions

    package = package_of(world.product_a)
    extra = create_device("dev-a2", world.product_a, world.org.a)
    campaign = actions.create_campaign(acting_user=otto, package=package, name="Roll 1.0",
                                       target_type="product",
                                       devices=[world.device_a, extra], task_timeout=900)
    client = client_of(otto)
    # Nothing failed yet: no button, and a POST creates nothing.
    assert 'data-testid="campaign-retry"' not in text(client.get(f"/ota/campaigns/{campaign.pk}/"))
    client.post(f"/ota/campaigns/{campaign.pk}/retry/")
    assert OtaCampaign.objects.count() == 1
    OtaTask.objects.filter(campaign=campaign, device=world.device_a).update(status="failed")
    OtaTask.objects.filter(campaign=campaign, device=extra).update(status="succeeded")
    assert 'data-testid="campaign-retry"' in text(client.get(f"/ota/campaigns/{campaign.pk}/"))
    # Another department cannot retry it; a GET changes nothing.
    assert client_of(bert).post(f"/ota/campaigns/{campaign.pk}/retry/").status_code == 404
    assert client.get(f"/ota/campaigns/{campaign.pk}/retry/").status_code == 405
    response = client.post(f"/ota/campaigns/{campaign.pk}/retry/")
    retry = OtaCampaign.objects.exclude(pk=campaign.pk).get()
    assert response.status_code == 302 and response["Location"] == f"/ota/campaigns/{retry.pk}/"
    assert retry.package == package and retry.target_type == "devices"
    assert retry.status == "running" and retry.task_timeout == 900
    assert retry.name == "Roll 1.0 (retry)" and retry.created_by == otto
    assert [t.device.identifier for t in retry.tasks.all()] == ["dev-a1"]
    assert retry.tasks.get().status == "pending"
    campaign.refresh_from_db()
    assert OtaTask.objects.filter(campaign=campaign, status="failed").count() == 1


def test_retry_needs_the_permission_to_create_campaigns(world, client_of):
    from webapp.ota import actions

    reader = world.org.user("reader", world.org.a, (
        "products.view_product", "devices.view_device", "ota.view_otacampaign",
        "ota.view_otatask"), scope="department")
    campaign = actions.create_campaign(acting_user=None, package=package_of(world.product_a),
                                       name="R", target_type="product",
                                       devices=[world.device_a])
    OtaTask.objects.filter(campaign=campaign).update(status="failed")
    client = client_of(reader)
    assert 'data-testid="campaign-retry"' not in text(client.get(f"/ota/campaigns/{campaign.pk}/"))
    assert client.post(f"/ota/campaigns/{campaign.pk}/retry/").status_code == 403
    assert OtaCampaign.objects.count() == 1
