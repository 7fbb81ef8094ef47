"""The console's alarm handling: filters, bulk acknowledge and clear (only alarms in scope),
the alarm page with its history, comments (escaped) and assignment (only to users in scope
who may view alarms), and the permissions each change needs."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from tests.console.conftest import OPERATOR_PERMISSIONS
from tests.console.test_pages import make_alarm, text
from webapp.rules.models import AlarmComment, AlarmEvent
from webapp.telemetry.models import DeviceMessage

pytestmark = pytest.mark.django_db


def flash(client, path="/alarms/?status="):
    return text(client.get(path))


def test_bulk_acknowledge_touches_only_alarms_in_scope(world, client_of):
    """Alice names three of her alarms (one already cleared) and one of B's: hers change
    through the action (history kept), B's is reported as not found and stays as it was."""
    a1, a2 = make_alarm(world.device_a, "Hot 1"), make_alarm(world.device_a, "Hot 2")
    done = make_alarm(world.device_a, "Hot 3")
    done.status = "cleared"
    done.save()
    b1 = make_alarm(world.device_b, "Hot of B")
    client = client_of(world.alice)
    response = client.post("/alarms/bulk/", {"operation": "acknowledge",
                                             "ids": [a1.pk, a2.pk, done.pk, b1.pk, "x"],
                                             "next": "/alarms/?status="})
    assert response.status_code == 302 and response["Location"] == "/alarms/?status="
    page = flash(client)
    assert "2 acknowledged, 1 already cleared, 2 not found" in page
    for alarm in (a1, a2):
        alarm.refresh_from_db()
        assert alarm.status == "acknowledged" and alarm.acknowledged_by == world.alice
        assert AlarmEvent.objects.filter(alarm=alarm, kind="acknowledged",
                                         actor=world.alice).exists()
    b1.refresh_from_db()
    assert b1.status == "active" and not AlarmEvent.objects.filter(alarm=b1).exists()


def test_bulk_clear_reports_each_outcome(world, client_of):
    a1, a2 = make_alarm(world.device_a, "Hot 1"), make_alarm(world.device_a, "Hot 2")
    b1 = make_alarm(world.device_b, "Hot of B")
    client = client_of(world.alice)
    client.post("/alarms/bulk/", {"operation": "clear", "ids": [a1.pk], "reason": "fixed"})
    client.post("/alarms/bulk/", {"operation": "clear", "ids": [a1.pk, a2.pk, b1.pk]})
    page = flash(client)
    assert "1 cleared" in page and "1 cleared, 1 already cleared, 1 not found" in page
    a1.refresh_from_db()
    assert a1.status == "cleared" and a1.cleared_by == world.alice
    assert AlarmEvent.objects.get(alarm=a1, kind="cleared").detail == {"reason": "fixed"}
    b1.refresh_from_db()
    assert b1.status == "active"


def test_bulk_refuses_unknown_operations_and_needs_change_permission(world, client_of):
    alarm = make_alarm(world.device_a)
    client = client_of(world.alice)
    client.post("/alarms/bulk/", {"operation": "delete", "ids": [alarm.pk]})
    assert "Choose acknowledge or clear." in flash(client)
    viewer = world.org.user("viewer", world.org.a, ("rules.view_alarm",), scope="department")
    viewer_client = client_of(viewer)
    assert viewer_client.post("/alarms/bulk/", {"operation": "acknowledge",
                                                "ids": [alarm.pk]}).status_code == 403
    assert client.get("/alarms/bulk/").status_code == 405
    for path in (f"/alarms/{alarm.pk}/comment/", f"/alarms/{alarm.pk}/assign/"):
        assert viewer_client.post(path, {"text": "hi", "assignee": world.alice.pk}
                                  ).status_code == 403
    alarm.refresh_from_db()
    assert alarm.status == "active" and alarm.assignee is None
    assert not AlarmComment.objects.exists()
    # a viewer sees the page, without the forms
    page = text(viewer_client.get(f"/alarms/{alarm.pk}/"))
    assert 'data-testid="comment-form"' not in page and 'id="alarm-bulk"' not in page
    assert client_of(world.nobody).get(f"/alarms/{alarm.pk}/").status_code == 403


def test_bulk_names_at_most_the_limit(world, client_of):
    from webapp.console.views import alarms

    alarm = make_alarm(world.device_a)
    ids = [str(10_000 + i) for i in range(alarms.BULK_LIMIT)] + [str(alarm.pk)]
    client = client_of(world.alice)
    client.post("/alarms/bulk/", {"operation": "acknowledge", "ids": ids})
    alarm.refresh_from_db()
    assert alarm.status == "active"
    assert f"{alarms.BULK_LIMIT} not found" in flash(client)


def test_filters(world, client_of):
    hot = make_alarm(world.device_a, "Hot", severity="critical")
    cold = make_alarm(world.device_a, "Cold", severity="minor")
    cold.assignee = world.alice
    cold.first_seen = cold.last_seen = timezone.now() - timedelta(days=3)
    cold.save()
    other = world.org.user("carol", world.org.a, OPERATOR_PERMISSIONS, scope="department")
    client = client_of(world.alice)

    def rows(query):
        page = text(client.get(f"/alarms/?{query}"))
        return {pk for pk in (hot.pk, cold.pk) if f'data-alarm="{pk}"' in page}

    assert rows("") == {hot.pk, cold.pk}
    assert rows("severity=critical") == {hot.pk}
    assert rows(f"assignee={world.alice.pk}") == {cold.pk}
    assert rows(f"assignee={other.pk}") == set()
    assert rows("product=thermo-a") == {hot.pk, cold.pk}
    assert rows("product=thermo-b") == set()
    assert rows("device=dev-a1&status=active") == {hot.pk, cold.pk}
    since = (timezone.localtime() - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M")
    assert rows(f"start={since}") == {hot.pk}
    assert rows(f"end={since}") == {cold.pk}
    assert rows("status=cleared") == set()
    # the assignee choices are users in alice's scope who may view alarms
    page = text(client.get("/alarms/"))
    assert ">carol<" in page and ">alice<" in page and ">bob<" not in page
    assert ">nobody<" not in page


def test_alarm_page_shows_details_history_and_messages_around(world, client_of, ingest):
    from tests.console.conftest import log_event

    alarm = make_alarm(world.device_a, "Too hot")
    ingest.send(log_event("dev-a1", ok=False, reason="temperature out of range"))
    client = client_of(world.alice)
    client.post(f"/alarms/{alarm.pk}/acknowledge/", {"next": f"/alarms/{alarm.pk}/"})
    page = text(client.get(f"/alarms/{alarm.pk}/"))
    assert "Too hot on dev-a1" in page and 'data-event="acknowledged"' in page
    assert DeviceMessage.objects.filter(device_identifier="dev-a1").exists()
    assert "temperature out of range" in page
    assert 'data-testid="alarm-status">Acknowledged<' in page


def test_alarm_page_of_another_department_is_not_found(world, client_of):
    alarm_b = make_alarm(world.device_b)
    client = client_of(world.alice)
    assert client.get(f"/alarms/{alarm_b.pk}/").status_code == 404
    assert client.post(f"/alarms/{alarm_b.pk}/comment/", {"text": "x"}).status_code == 404
    assert client.post(f"/alarms/{alarm_b.pk}/assign/",
                       {"assignee": world.alice.pk}).status_code == 404
    assert not AlarmComment.objects.exists()
    alarm_b.refresh_from_db()
    assert alarm_b.assignee is None


def test_comment_is_stored_through_the_action_and_rendered_escaped(world, client_of):
    alarm = make_alarm(world.device_a)
    client = client_of(world.alice)
    payload = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    response = client.post(f"/alarms/{alarm.pk}/comment/", {"text": payload})
    assert response.status_code == 302 and response["Location"] == f"/alarms/{alarm.pk}/"
    comment = AlarmComment.objects.get(alarm=alarm)
    assert comment.text == payload and comment.author == world.alice
    assert AlarmEvent.objects.filter(alarm=alarm, kind="commented", actor=world.alice).exists()
    page = text(client.get(f"/alarms/{alarm.pk}/"))
    assert "&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;" in page
    assert "<script>alert" not in page and "<img src=x" not in page
    # empty and oversized comments are refused
    client.post(f"/alarms/{alarm.pk}/comment/", {"text": "   "})
    client.post(f"/alarms/{alarm.pk}/comment/", {"text": "x" * 2001})
    assert AlarmComment.objects.filter(alarm=alarm).count() == 1
    assert "at most 2000 characters" in text(client.get(f"/alarms/{alarm.pk}/"))


def test_assign_only_to_users_in_scope_who_may_view_alarms(world, client_of):
    alarm = make_alarm(world.device_a)
    carol = world.org.user("carol", world.org.a, OPERATOR_PERMISSIONS, scope="department")
    client = client_of(world.alice)
    for refused in (world.bob.pk, world.nobody.pk, 999999, "bob", ""):
        if refused == "":
            continue
        client.post(f"/alarms/{alarm.pk}/assign/", {"assignee": refused})
        alarm.refresh_from_db()
        assert alarm.assignee is None, refused
    assert "outside your data scope" in text(client.get(f"/alarms/{alarm.pk}/"))
    client.post(f"/alarms/{alarm.pk}/assign/", {"assignee": carol.pk})
    alarm.refresh_from_db()
    assert alarm.assignee == carol
    event = AlarmEvent.objects.get(alarm=alarm, kind="assigned")
    assert event.actor == world.alice and event.detail == {"assignee": "carol"}
    client.post(f"/alarms/{alarm.pk}/assign/", {"assignee": ""})
    alarm.refresh_from_db()
    assert alarm.assignee is None
    history = text(client.get(f"/alarms/{alarm.pk}/"))
    assert "Assignee: carol" in history and "Assignee: —" in history
    # the superuser sees everything: may assign B's alarm to bob, not to nobody
    alarm_b = make_alarm(world.device_b)
    root = client_of(world.root)
    root.post(f"/alarms/{alarm_b.pk}/assign/", {"assignee": world.nobody.pk})
    alarm_b.refresh_from_db()
    assert alarm_b.assignee is None
    root.post(f"/alarms/{alarm_b.pk}/assign/", {"assignee": world.bob.pk})
    alarm_b.refresh_from_db()
    assert alarm_b.assignee == world.bob
