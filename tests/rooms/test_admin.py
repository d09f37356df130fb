"""The Room, Message and Conversation admin: changelists load, search and filter, and the
message changelist does not grow a query per row."""

from __future__ import annotations

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse

from rooms import services
from rooms.models import Message, Room

pytestmark = pytest.mark.django_db


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def rooms(alice):
    general = Room.objects.create(slug="general", title="General chat", created_by=alice)
    secret = Room.objects.create(slug="secret", title="Back room", is_public=False)
    secret.members.add(alice)
    return general, secret


def results(response) -> list:
    assert response.status_code == 200, response
    return list(response.context["cl"].result_list)


# --- rooms ------------------------------------------------------------------------------------


def test_room_changelist_loads(admin_client, rooms):
    response = admin_client.get(reverse("admin:rooms_room_changelist"))
    assert [r.slug for r in results(response)] == ["general", "secret"]


def test_room_changelist_searches_slug_and_title(admin_client, rooms):
    url = reverse("admin:rooms_room_changelist")
    assert [r.slug for r in results(admin_client.get(url, {"q": "gene"}))] == ["general"]
    assert [r.slug for r in results(admin_client.get(url, {"q": "back room"}))] == ["secret"]


def test_room_changelist_filters_public_and_private(admin_client, rooms):
    url = reverse("admin:rooms_room_changelist")
    assert [r.slug for r in results(admin_client.get(url, {"is_public__exact": "0"}))] == ["secret"]
    assert [r.slug for r in results(admin_client.get(url, {"is_public__exact": "1"}))] == ["general"]


def test_room_changelist_drills_down_by_date(admin_client, rooms):
    general, _ = rooms
    url = reverse("admin:rooms_room_changelist")
    year = general.created_at.year
    assert len(results(admin_client.get(url, {"created_at__year": year}))) == 2
    assert results(admin_client.get(url, {"created_at__year": year - 1})) == []


def test_room_change_page_loads(admin_client, rooms):
    general, _ = rooms
    response = admin_client.get(reverse("admin:rooms_room_change", args=[general.pk]))
    assert response.status_code == 200
    assert "General chat" in response.content.decode()


# --- messages ------------------------------------------------------------------------------------


@pytest.fixture
def messages(alice, bob, rooms):
    general, secret = rooms
    services.room_message_create(room=general, sender=alice, body="hello general", client_id="c1")
    services.room_message_create(room=secret, sender=alice, body="psst secret", client_id=None)
    services.private_message_create(sender=bob, to="alice", body="hi alice, privately", client_id=None)
    return Message.objects.order_by("id")


def test_message_changelist_shows_room_and_private_messages(admin_client, messages):
    response = admin_client.get(reverse("admin:rooms_message_changelist"))
    assert len(results(response)) == 3
    page = response.content.decode()
    assert "#general" in page and "#secret" in page and "@alice" in page


def test_message_changelist_searches_body_sender_room_and_client_id(admin_client, messages):
    url = reverse("admin:rooms_message_changelist")
    assert [m.body for m in results(admin_client.get(url, {"q": "privately"}))] == ["hi alice, privately"]
    assert [m.body for m in results(admin_client.get(url, {"q": "bob"}))] == ["hi alice, privately"]
    assert [m.body for m in results(admin_client.get(url, {"q": "secret"}))] == ["psst secret"]
    assert [m.body for m in results(admin_client.get(url, {"q": "c1"}))] == ["hello general"]


def test_message_changelist_filters_by_room(admin_client, messages, rooms):
    general, _ = rooms
    url = reverse("admin:rooms_message_changelist")
    assert [m.body for m in results(admin_client.get(url, {"room__id__exact": general.pk}))] == ["hello general"]


def test_message_changelist_drills_down_by_date(admin_client, messages):
    url = reverse("admin:rooms_message_changelist")
    year = messages.first().created_at.year
    assert len(results(admin_client.get(url, {"created_at__year": year}))) == 3


def test_message_changelist_shortens_long_bodies(admin_client, alice, rooms):
    general, _ = rooms
    Message.objects.create(room=general, sender=alice, body="x" * 200)
    response = admin_client.get(reverse("admin:rooms_message_changelist"))
    page = response.content.decode()
    assert "x" * 79 + "…" in page and "x" * 80 not in page


def test_message_changelist_queries_do_not_grow_with_the_rows(admin_client, alice, bob, rooms):
    general, _ = rooms
    url = reverse("admin:rooms_message_changelist")

    def queries_for_a_page_of(count: int) -> int:
        Message.objects.all().delete()
        for i in range(count):
            services.room_message_create(room=general, sender=alice, body=f"r{i}", client_id=None)
            services.private_message_create(sender=bob, to="alice", body=f"p{i}", client_id=None)
        with CaptureQueriesContext(connection) as captured:
            assert len(results(admin_client.get(url))) == 2 * count
        return len(captured)

    assert queries_for_a_page_of(2) == queries_for_a_page_of(20)


# --- conversations --------------------------------------------------------------------------------


def test_conversation_changelist_loads_and_searches(admin_client, messages, make_user):
    carol = make_user("carol")
    services.private_message_create(sender=carol, to="bob", body="hey", client_id=None)
    url = reverse("admin:rooms_conversation_changelist")
    assert len(results(admin_client.get(url))) == 2
    found = results(admin_client.get(url, {"q": "carol"}))
    assert [{found[0].user_low.username, found[0].user_high.username}] == [{"bob", "carol"}]
