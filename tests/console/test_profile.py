"""One's own settings in the console: language and time zone, and what follows the zone
(server-rendered times, the charts' calendar days, the telemetry API's default `tz`)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from tests.system.conftest import PASSWORD
from webapp.devices.models import Device

pytestmark = pytest.mark.django_db


def test_a_user_chooses_a_time_zone_and_pages_follow_it(world, client_of):
    client = client_of(world.alice)
    response = client.post("/profile/", {"nickname": "Al", "email": "al@example.com",
                                         "current_password": PASSWORD, "language": "en",
                                         "time_zone": "Asia/Shanghai"})
    assert response.status_code == 302
    world.alice.refresh_from_db()
    assert (world.alice.time_zone, world.alice.nickname) == ("Asia/Shanghai", "Al")
    Device.objects.filter(pk=world.device_a.pk).update(
        last_seen=datetime(2026, 1, 1, 0, 0, tzinfo=UTC))
    page = client.get("/devices/dev-a1/").content.decode()
    assert 'data-tz="Asia/Shanghai"' in page
    assert "2026-01-01 08:00:00" in page  # rendered in the user's zone, not UTC
    assert 'data-tz' not in client_of(world.bob).get("/devices/dev-b1/").content.decode()


@pytest.mark.parametrize("zone", ["Mars/Olympus", "../../etc/passwd", "/etc/localtime",
                                  "x" * 200])
def test_an_unknown_time_zone_is_refused_with_the_reason(world, client_of, zone):
    response = client_of(world.alice).post("/profile/", {"time_zone": zone})
    assert response.status_code == 400
    assert "Unknown time zone" in response.content.decode()
    world.alice.refresh_from_db()
    assert world.alice.time_zone == ""


def test_a_bad_language_or_email_is_refused(world, client_of):
    response = client_of(world.alice).post("/profile/", {"language": "xx", "email": "nope"})
    assert response.status_code == 400
    body = response.content.decode()
    assert "Choose one of the languages" in body and "valid e-mail" in body


def test_calendar_aggregates_default_to_the_users_zone(world, client_of):
    world.alice.time_zone = "Asia/Shanghai"
    world.alice.save(update_fields=["time_zone"])
    client = client_of(world.alice)
    url = ("/api/v1/devices/dev-a1/telemetry/?service=env&property=temperature&interval=1d"
           "&agg=avg&start=2026-01-01T00:00:00Z&end=2026-01-03T00:00:00Z")
    body = client.get(url).json()
    assert body["tz"] == "Asia/Shanghai"
    assert client.get(url + "&tz=Europe/Paris").json()["tz"] == "Europe/Paris"
    assert client_of(world.bob).get(url.replace("dev-a1", "dev-b1")).json()["tz"] == "UTC"


def test_the_profile_needs_a_login(client):
    assert client.get("/profile/").status_code == 302


def test_the_api_profile_sets_and_checks_the_time_zone(world, client_of):
    client = client_of(world.alice)
    bad = client.patch("/api/v1/auth/me/", {"time_zone": "Mars/Olympus"},
                       content_type="application/json")
    assert bad.status_code == 400 and "time_zone" in bad.json().get("errors", bad.json())
    good = client.patch("/api/v1/auth/me/", {"time_zone": "Asia/Shanghai"},
                        content_type="application/json")
    assert good.status_code == 200 and good.json()["time_zone"] == "Asia/Shanghai"


def test_a_stolen_session_cannot_move_the_e_mail_address(world, client_of):
    """Password reset mails go to the e-mail address: changing it needs the current password
    (console and API), so a session alone cannot take the account over for good."""
    client = client_of(world.alice)
    before = world.alice.email
    for form in ({"email": "thief@example.com"},
                 {"email": "thief@example.com", "current_password": "wrong"}):
        response = client.post("/profile/", form)
        assert response.status_code == 400 and "current password" in response.content.decode()
        api = client.patch("/api/v1/auth/me/", {"email": "thief@example.com",
                                                "current_password": form.get(
                                                    "current_password", "")},
                           content_type="application/json")
        assert api.status_code == 400 and "current_password" in api.content.decode()
    world.alice.refresh_from_db()
    assert world.alice.email == before
    ok = client.patch("/api/v1/auth/me/", {"email": "alice2@example.com",
                                           "current_password": PASSWORD},
                      content_type="application/json")
    assert ok.status_code == 200 and ok.json()["email"] == "alice2@example.com"
    # Other fields need no password; the same address again is no change.
    assert client.post("/profile/", {"email": "alice2@example.com",
                                     "time_zone": "UTC"}).status_code == 302
