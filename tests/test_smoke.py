import pytest

pytestmark = pytest.mark.django_db(transaction=True)


async def test_two_users_chat_in_a_room(connect, make_user):
    alice = await database(make_user, "alice")
    bob = await database(make_user, "bob")
    a = await connect(alice)
    b = await connect(bob)
    joined = await a.join("general")
    assert joined["online"] == ["alice"]
    assert (await a.recv_type("presence"))["user"] == "alice"
    await b.join("general")
    assert (await a.recv_type("presence"))["user"] == "bob"
    await a.send(type="chat", room="general", body="hello", client_id="c1")
    got_a = await a.recv_type("chat")
    got_b = await b.until("chat")
    assert got_a == got_b
    assert got_b["body"] == "hello" and got_b["sender"] == "alice" and got_b["client_id"] == "c1"


async def database(fn, *args):
    from channels.db import database_sync_to_async

    return await database_sync_to_async(fn)(*args)
