"""Writes for rooms and messages: the database state, and the events sent through the
realtime seam (captured, and only after the transaction commits)."""

from __future__ import annotations

import json

import pytest
from django.db import IntegrityError, transaction

from chatsite import realtime
from rooms import services
from rooms.errors import ChatError
from rooms.models import Conversation, Message, Room

pytestmark = pytest.mark.django_db


@pytest.fixture
def sent(monkeypatch) -> list[tuple[str, dict]]:
    """Every (group, event) that reaches the channel layer."""
    calls: list[tuple[str, dict]] = []
    monkeypatch.setattr(realtime, "group_send", lambda group, event: calls.append((group, event)))
    return calls


@pytest.fixture
def alice(make_user):
    return make_user("alice")


@pytest.fixture
def bob(make_user):
    return make_user("bob")


@pytest.fixture
def general(alice):
    return Room.objects.create(slug="general", title="General", created_by=alice)


# --- room_resolve ---------------------------------------------------------------------


def test_room_resolve_creates_a_public_room_on_first_use(alice):
    room = services.room_resolve(user=alice, slug="lobby")
    room.refresh_from_db()
    assert room.slug == "lobby" and room.title == "lobby"
    assert room.is_public and room.created_by == alice


def test_room_resolve_returns_the_existing_room(alice, bob, general):
    assert services.room_resolve(user=bob, slug="general") == general
    assert Room.objects.count() == 1
    general.refresh_from_db()
    assert general.title == "General" and general.created_by == alice


def test_room_resolve_refuses_a_private_room_to_a_non_member(alice, bob, make_user):
    carol = make_user("carol")
    secret = Room.objects.create(slug="secret", is_public=False, created_by=alice)
    secret.members.add(bob)
    with pytest.raises(ChatError) as caught:
        services.room_resolve(user=carol, slug="secret")
    assert caught.value.code == "forbidden"
    assert services.room_resolve(user=bob, slug="secret") == secret
    assert services.room_resolve(user=alice, slug="secret") == secret


# --- room_join_state --------------------------------------------------------------------


def seed(room, sender, count: int) -> list[int]:
    rows = Message.objects.bulk_create([Message(room=room, sender=sender, body=f"m{i}") for i in range(count)])
    return [row.id for row in rows]


def test_room_join_state_without_since_gives_the_newest_id(alice, general):
    assert services.room_join_state(room=general, since=None, recovery_limit=10) == {
        "last_id": None,
        "messages": [],
        "more": False,
    }
    ids = seed(general, alice, 3)
    state = services.room_join_state(room=general, since=None, recovery_limit=10)
    assert state == {"last_id": ids[-1], "messages": [], "more": False}


def test_room_join_state_with_since_gives_the_missed_messages(alice, general):
    ids = seed(general, alice, 4)
    state = services.room_join_state(room=general, since=ids[1], recovery_limit=10)
    assert [m["id"] for m in state["messages"]] == ids[2:]
    assert state["last_id"] == ids[-1] and state["more"] is False


def test_room_join_state_past_the_recovery_limit_says_more(alice, general):
    ids = seed(general, alice, 5)
    state = services.room_join_state(room=general, since=ids[0], recovery_limit=3)
    assert [m["id"] for m in state["messages"]] == ids[1:4]
    assert state["more"] is True
    assert state["last_id"] == ids[-1]
    exactly = services.room_join_state(room=general, since=ids[1], recovery_limit=3)
    assert [m["id"] for m in exactly["messages"]] == ids[2:] and exactly["more"] is False


def test_room_join_state_with_since_the_newest_id_is_empty(alice, general):
    ids = seed(general, alice, 2)
    assert services.room_join_state(room=general, since=ids[-1], recovery_limit=3) == {
        "last_id": ids[-1],
        "messages": [],
        "more": False,
    }


# --- room_message_create ------------------------------------------------------------------


def test_room_message_create_persists_and_sends_one_event_after_commit(
    alice, general, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        frame, created = services.room_message_create(room=general, sender=alice, body="hello", client_id="c1")
        assert sent == [], "nothing is sent before the transaction commits"
    assert created is True
    message = Message.objects.get()
    assert (message.room, message.sender, message.body, message.client_id) == (general, alice, "hello", "c1")
    assert message.conversation_id is None and message.recipient_id is None
    assert frame["id"] == message.id and frame["type"] == "chat" and frame["room"] == "general"
    assert len(callbacks) == 1
    assert len(sent) == 1
    group, event = sent[0]
    assert group == realtime.room_group(general.id) == f"room.{general.id}"
    assert event["type"] == "room.message"
    assert event["room_id"] == general.id and event["id"] == message.id
    assert json.loads(event["text"]) == frame


def test_room_message_create_sends_nothing_when_the_transaction_rolls_back(
    alice, general, sent, django_capture_on_commit_callbacks
):
    with (
        django_capture_on_commit_callbacks(execute=True) as callbacks,
        pytest.raises(RuntimeError),
        transaction.atomic(),
    ):
        services.room_message_create(room=general, sender=alice, body="hello", client_id="c1")
        raise RuntimeError("the caller's transaction fails after the insert")
    assert callbacks == []
    assert sent == []
    assert Message.objects.count() == 0


def test_a_duplicate_room_message_returns_the_original_and_sends_nothing(
    alice, general, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        original, _ = services.room_message_create(room=general, sender=alice, body="first", client_id="c1")
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again, created = services.room_message_create(room=general, sender=alice, body="second", client_id="c1")
    assert created is False
    assert again == original
    assert callbacks == [] and sent == []
    assert list(Message.objects.values_list("body", flat=True)) == ["first"]


def test_the_same_client_id_from_two_senders_makes_two_messages(
    alice, bob, general, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        first, created_first = services.room_message_create(room=general, sender=alice, body="a", client_id="c1")
        second, created_second = services.room_message_create(room=general, sender=bob, body="b", client_id="c1")
    assert created_first and created_second and first["id"] != second["id"]
    assert Message.objects.filter(client_id="c1").count() == 2
    assert len(sent) == 2


def test_messages_without_a_client_id_are_never_deduplicated(alice, general, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        for _ in range(2):
            _, created = services.room_message_create(room=general, sender=alice, body="same", client_id=None)
            assert created
    assert Message.objects.filter(client_id__isnull=True).count() == 2
    assert len(sent) == 2


def test_a_client_id_is_scoped_to_its_sender_across_rooms(alice, general, sent, django_capture_on_commit_callbacks):
    other = Room.objects.create(slug="other")
    with django_capture_on_commit_callbacks(execute=True):
        original, _ = services.room_message_create(room=general, sender=alice, body="here", client_id="c1")
        again, created = services.room_message_create(room=other, sender=alice, body="there", client_id="c1")
    assert created is False and again == original
    assert len(sent) == 1


# --- room_messages_create (the chat socket's batched write) ---------------------------------


def chat(room, sender, body, client_id=None):
    return services.RoomChat(room=room, sender=sender, body=body, client_id=client_id)


def test_a_batch_is_stored_in_order_with_one_event_per_new_message(alice, bob, general, sent):
    results = services.room_messages_create(
        [chat(general, alice, "one", "c1"), chat(general, bob, "two"), chat(general, alice, "three", "c2")]
    )
    assert [r.created for r in results] == [True, True, True]
    stored = list(Message.objects.order_by("id").values_list("id", "body", "sender__username", "client_id"))
    assert [(body, who, cid) for _, body, who, cid in stored] == [
        ("one", "alice", "c1"), ("two", "bob", None), ("three", "alice", "c2"),
    ]  # fmt: skip
    assert [r.frame["id"] for r in results] == [row[0] for row in stored]
    assert [r.frame["body"] for r in results] == ["one", "two", "three"]
    for result in results:
        group, event = result.publish
        assert group == f"room.{general.id}" and event["id"] == result.frame["id"]
        assert json.loads(event["text"]) == result.frame
    assert sent == [], "the caller publishes, after the transaction"


def test_a_batch_answers_resends_with_the_original_already_stored_or_earlier_in_the_batch(alice, bob, general):
    (before,) = services.room_messages_create([chat(general, alice, "stored earlier", "c1")])
    results = services.room_messages_create(
        [
            chat(general, alice, "resend of c1", "c1"),
            chat(general, bob, "new", "b1"),
            chat(general, bob, "resend of b1 in the same batch", "b1"),
            chat(general, bob, "same client_id, other sender", "c1"),
        ]
    )
    assert [r.created for r in results] == [False, True, False, True]
    assert results[0].frame == before.frame and results[0].publish is None
    assert results[2].frame == results[1].frame and results[2].publish is None
    assert Message.objects.count() == 3


def test_a_batch_that_races_another_process_falls_back_to_one_savepoint_per_message(alice, bob, general, monkeypatch):
    def racing(chats):
        # Another process stored alice's c1 after our duplicate check: the INSERT is refused.
        raise IntegrityError("UNIQUE constraint failed")

    Message.objects.create(room=general, sender=alice, body="from the other process", client_id="c1")
    monkeypatch.setattr(services, "_room_messages_insert", racing)
    results = services.room_messages_create([chat(general, alice, "mine", "c1"), chat(general, bob, "other")])
    assert [r.created for r in results] == [False, True]
    assert results[0].frame["body"] == "from the other process"
    assert sorted(Message.objects.values_list("body", flat=True)) == ["from the other process", "other"]


# --- private_message_create -----------------------------------------------------------------


def test_private_message_create_persists_and_sends_to_both_user_groups(
    alice, bob, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        frame, created = services.private_message_create(sender=alice, to="bob", body="psst", client_id="p1")
        assert sent == []
    assert created is True
    message = Message.objects.select_related("conversation").get()
    assert (message.sender, message.recipient, message.body, message.room_id) == (alice, bob, "psst", None)
    low, high = sorted([alice, bob], key=lambda u: u.pk)
    assert (message.conversation.user_low, message.conversation.user_high) == (low, high)
    assert frame == {
        "type": "private",
        "id": message.id,
        "sender": "alice",
        "to": "bob",
        "body": "psst",
        "created_at": frame["created_at"],
        "client_id": "p1",
    }
    assert len(callbacks) == 2
    assert sorted(group for group, _ in sent) == sorted([realtime.user_group(alice.pk), realtime.user_group(bob.pk)])
    for _, event in sent:
        assert event["type"] == "user.frame"
        assert json.loads(event["text"]) == frame


def test_private_messages_both_ways_share_one_conversation(alice, bob, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.private_message_create(sender=alice, to="bob", body="hi", client_id=None)
        services.private_message_create(sender=bob, to="alice", body="hello", client_id=None)
    assert Conversation.objects.count() == 1
    assert Message.objects.filter(conversation=Conversation.objects.get()).count() == 2


def test_a_private_message_to_oneself_is_sent_once(alice, sent, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=True):
        services.private_message_create(sender=alice, to="alice", body="note to self", client_id=None)
    assert [group for group, _ in sent] == [realtime.user_group(alice.pk)]


@pytest.mark.parametrize("to", ["nobody", "gone"])
def test_a_private_message_to_an_unknown_or_inactive_user_is_not_found(
    alice, make_user, sent, django_capture_on_commit_callbacks, to
):
    make_user("gone", is_active=False)
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ChatError) as caught:
        services.private_message_create(sender=alice, to=to, body="hello?", client_id=None)
    assert caught.value.code == "not_found"
    assert Message.objects.count() == 0 and Conversation.objects.count() == 0
    assert sent == []


def test_a_duplicate_private_message_returns_the_original_and_sends_nothing(
    alice, bob, sent, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        original, _ = services.private_message_create(sender=alice, to="bob", body="first", client_id="p1")
    sent.clear()
    with django_capture_on_commit_callbacks(execute=True) as callbacks:
        again, created = services.private_message_create(sender=alice, to="bob", body="second", client_id="p1")
    assert created is False and again == original
    assert callbacks == [] and sent == []
    assert Message.objects.count() == 1
