"""Reads for rooms and messages. The hot-path selectors run a fixed number of queries,
whatever the number of messages (no N+1 on senders, recipients or rooms)."""

from __future__ import annotations

import pytest

from rooms import selectors
from rooms.errors import ChatError
from rooms.models import Conversation, Message, Room

pytestmark = pytest.mark.django_db

MESSAGE_COUNTS = [5, 60]  # below and above the default page of 50


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def general():
    return Room.objects.create(slug="general")


def seed_room(room, senders, count: int) -> list[int]:
    rows = Message.objects.bulk_create(
        [Message(room=room, sender=senders[i % len(senders)], body=f"m{i}") for i in range(count)]
    )
    return [row.id for row in rows]


def seed_conversation(alice, bob, count: int) -> list[int]:
    low, high = sorted([alice, bob], key=lambda u: u.pk)
    conversation = Conversation.objects.create(user_low=low, user_high=high)
    pairs = [(alice, bob), (bob, alice)]
    rows = Message.objects.bulk_create(
        [
            Message(conversation=conversation, sender=pairs[i % 2][0], recipient=pairs[i % 2][1], body=f"p{i}")
            for i in range(count)
        ]
    )
    return [row.id for row in rows]


# --- query counts ------------------------------------------------------------------------


@pytest.mark.parametrize("count", MESSAGE_COUNTS)
def test_room_history_runs_two_queries_whatever_the_number_of_messages(
    alice, bob, general, django_assert_num_queries, count
):
    seed_room(general, [alice, bob], count)
    with django_assert_num_queries(2):
        messages, _ = selectors.room_history(user=alice, slug="general", before=None, limit=50)
    assert len(messages) == min(count, 50)
    assert {m["sender"] for m in messages} == {"alice", "bob"}


@pytest.mark.parametrize("count", MESSAGE_COUNTS)
def test_room_history_of_a_private_room_adds_one_membership_query(alice, bob, django_assert_num_queries, count):
    secret = Room.objects.create(slug="secret", is_public=False)
    secret.members.add(alice)
    seed_room(secret, [alice, bob], count)
    with django_assert_num_queries(3):
        messages, _ = selectors.room_history(user=alice, slug="secret", before=None, limit=50)
    assert len(messages) == min(count, 50)


@pytest.mark.parametrize("count", MESSAGE_COUNTS)
def test_conversation_history_runs_three_queries_whatever_the_number_of_messages(
    alice, bob, django_assert_num_queries, count
):
    seed_conversation(alice, bob, count)
    with django_assert_num_queries(3):
        messages, _ = selectors.conversation_history(user=alice, with_username="bob", before=None, limit=50)
    assert len(messages) == min(count, 50)
    assert {(m["sender"], m["to"]) for m in messages} == {("alice", "bob"), ("bob", "alice")}


@pytest.mark.parametrize("count", MESSAGE_COUNTS)
def test_room_messages_since_runs_one_query_whatever_the_number_of_messages(
    alice, bob, general, django_assert_num_queries, count
):
    ids = seed_room(general, [alice, bob], count)
    with django_assert_num_queries(1):
        messages, more = selectors.room_messages_since(room=general, since=ids[0], limit=1000)
    assert [m["id"] for m in messages] == ids[1:]
    assert more is False


def test_room_last_id_and_rooms_visible_run_one_query_each(alice, general, django_assert_num_queries):
    ids = seed_room(general, [alice], 3)
    Room.objects.create(slug="lobby")
    with django_assert_num_queries(1):
        assert selectors.room_last_id(room=general) == ids[-1]
    with django_assert_num_queries(1):
        assert [r["room"] for r in selectors.rooms_visible(user=alice)] == ["general", "lobby"]


def test_room_accessible_needs_no_query_for_a_public_room(alice, general, django_assert_num_queries):
    with django_assert_num_queries(0):
        assert selectors.room_accessible(room=general, user=alice)


# --- results --------------------------------------------------------------------------------


def test_room_history_pages_back_with_before(alice, general):
    ids = seed_room(general, [alice], 5)
    messages, has_more = selectors.room_history(user=alice, slug="general", before=None, limit=2)
    assert [m["id"] for m in messages] == ids[3:] and has_more is True
    messages, has_more = selectors.room_history(user=alice, slug="general", before=ids[3], limit=2)
    assert [m["id"] for m in messages] == ids[1:3] and has_more is True
    messages, has_more = selectors.room_history(user=alice, slug="general", before=ids[1], limit=2)
    assert [m["id"] for m in messages] == ids[:1] and has_more is False
    assert selectors.room_history(user=alice, slug="general", before=ids[0], limit=2) == ([], False)


def test_room_history_has_more_edges(alice, general):
    ids = seed_room(general, [alice], 3)
    assert selectors.room_history(user=alice, slug="general", before=None, limit=3)[1] is False
    assert selectors.room_history(user=alice, slug="general", before=None, limit=2)[1] is True
    assert selectors.room_history(user=alice, slug="general", before=ids[-1], limit=2)[1] is False


def test_room_history_only_reads_its_own_room(alice, general):
    other = Room.objects.create(slug="other")
    seed_room(other, [alice], 3)
    ids = seed_room(general, [alice], 2)
    messages, _ = selectors.room_history(user=alice, slug="general", before=None, limit=50)
    assert [m["id"] for m in messages] == ids
    assert {m["room"] for m in messages} == {"general"}


def test_room_history_of_an_unknown_room_is_not_found(alice):
    with pytest.raises(ChatError) as caught:
        selectors.room_history(user=alice, slug="nowhere", before=None, limit=50)
    assert caught.value.code == "not_found"


def test_room_history_of_a_private_room_is_forbidden_to_non_members(alice, bob):
    secret = Room.objects.create(slug="secret", is_public=False, created_by=bob)
    with pytest.raises(ChatError) as caught:
        selectors.room_history(user=alice, slug="secret", before=None, limit=50)
    assert caught.value.code == "forbidden"
    assert selectors.room_history(user=bob, slug="secret", before=None, limit=50) == ([], False)
    secret.members.add(alice)
    assert selectors.room_history(user=alice, slug="secret", before=None, limit=50) == ([], False)


def test_conversation_history_only_reads_the_pair(alice, bob, make_user):
    carol = make_user("carol")
    seed_conversation(alice, carol, 2)
    ids = seed_conversation(alice, bob, 3)
    messages, has_more = selectors.conversation_history(user=bob, with_username="alice", before=None, limit=50)
    assert [m["id"] for m in messages] == ids and has_more is False


def test_conversation_history_with_no_conversation_yet_is_empty(alice, bob):
    assert selectors.conversation_history(user=alice, with_username="bob", before=None, limit=50) == ([], False)


@pytest.mark.parametrize("username", ["nobody", "gone"])
def test_conversation_history_with_an_unknown_or_inactive_user_is_not_found(alice, make_user, username):
    make_user("gone", is_active=False)
    with pytest.raises(ChatError) as caught:
        selectors.conversation_history(user=alice, with_username=username, before=None, limit=50)
    assert caught.value.code == "not_found"


def test_room_messages_since_says_more_past_the_limit(alice, general):
    ids = seed_room(general, [alice], 5)
    messages, more = selectors.room_messages_since(room=general, since=ids[0], limit=3)
    assert [m["id"] for m in messages] == ids[1:4] and more is True
    messages, more = selectors.room_messages_since(room=general, since=ids[1], limit=3)
    assert [m["id"] for m in messages] == ids[2:] and more is False


def test_rooms_visible_lists_public_rooms_and_private_ones_of_members_and_creators(alice, bob):
    Room.objects.create(slug="lobby", title="The Lobby")
    Room.objects.create(slug="general")
    Room.objects.create(slug="bobs", is_public=False, created_by=bob)
    Room.objects.create(slug="club", is_public=False).members.add(alice, bob)
    assert selectors.rooms_visible(user=alice) == [
        {"id": Room.objects.get(slug="club").id, "room": "club", "title": "club"},
        {"id": Room.objects.get(slug="general").id, "room": "general", "title": "general"},
        {"id": Room.objects.get(slug="lobby").id, "room": "lobby", "title": "The Lobby"},
    ]
    assert [r["room"] for r in selectors.rooms_visible(user=bob)] == ["bobs", "club", "general", "lobby"]
