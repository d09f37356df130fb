"""API tokens: the create_token command, and creating and revoking them in the admin."""

from __future__ import annotations

import re
from io import StringIO

import pytest
from django.contrib.auth import get_user_model
from django.contrib.messages import get_messages
from django.core.management import CommandError, call_command
from django.urls import reverse

from accounts.models import ApiToken
from accounts.selectors import token_user, tokens_users
from accounts.services import TOKEN_PREFIX, token_create, token_hash

pytestmark = pytest.mark.django_db

RAW_TOKEN = re.compile(re.escape(TOKEN_PREFIX) + r"[A-Za-z0-9_-]{20,}")


def create_token(*args: str) -> str:
    out = StringIO()
    call_command("create_token", *args, stdout=out, stderr=StringIO())
    return out.getvalue().strip().splitlines()[-1]


# --- the command ------------------------------------------------------------------------------


def test_create_token_prints_a_token_that_authenticates_the_user(make_user):
    alice = make_user("alice")
    raw = create_token("alice", "--name", "ci")
    assert RAW_TOKEN.fullmatch(raw)
    assert token_user(raw=raw) == alice
    token = ApiToken.objects.get()
    assert token.user == alice and token.name == "ci" and token.prefix == raw[:10]
    assert token.key_hash == token_hash(raw) and raw not in token.key_hash, "only the hash is stored"


def test_create_token_makes_a_new_token_each_time(make_user):
    alice = make_user("alice")
    first, second = create_token("alice"), create_token("alice")
    assert first != second
    assert token_user(raw=first) == token_user(raw=second) == alice
    assert ApiToken.objects.filter(user=alice).count() == 2


def test_create_token_for_an_unknown_user_fails_without_create_user():
    with pytest.raises(CommandError, match="--create-user"):
        create_token("nobody")
    assert not get_user_model().objects.filter(username="nobody").exists()
    assert ApiToken.objects.count() == 0


def test_create_token_with_create_user_makes_a_token_only_user():
    raw = create_token("robot", "--create-user")
    robot = get_user_model().objects.get(username="robot")
    assert token_user(raw=raw) == robot
    assert not robot.has_usable_password()


def test_create_token_for_an_inactive_user_fails(make_user):
    make_user("gone", is_active=False)
    with pytest.raises(CommandError, match="inactive"):
        create_token("gone")
    assert ApiToken.objects.count() == 0


# --- the admin ----------------------------------------------------------------------------------


def test_adding_a_token_in_the_admin_shows_the_raw_key_once(admin_client, make_user):
    alice = make_user("alice")
    response = admin_client.post(
        reverse("admin:accounts_apitoken_add"), {"user": alice.pk, "name": "laptop"}, follow=True
    )
    assert response.status_code == 200
    shown = [str(m) for m in get_messages(response.wsgi_request)]
    raws = [match.group(0) for text in shown for match in [RAW_TOKEN.search(text)] if match]
    assert len(raws) == 1, shown
    raw = raws[0]
    token = ApiToken.objects.get()
    assert token.user == alice and token.name == "laptop" and token.revoked_at is None
    assert token.prefix == raw[:10] and token.key_hash == token_hash(raw)
    assert token_user(raw=raw) == alice

    change = admin_client.get(reverse("admin:accounts_apitoken_change", args=[token.pk]))
    assert change.status_code == 200
    assert raw not in change.content.decode()


def test_revoking_tokens_in_the_admin_stops_them_authenticating(admin_client, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    (_, kept_raw), (one, one_raw), (two, two_raw) = (
        token_create(user=alice, name="kept"),
        token_create(user=alice, name="one"),
        token_create(user=bob, name="two"),
    )
    changelist = reverse("admin:accounts_apitoken_changelist")
    response = admin_client.post(changelist, {"action": "revoke", "_selected_action": [one.pk, two.pk]}, follow=True)
    assert response.status_code == 200
    assert "Revoked 2 API token(s)." in [str(m) for m in get_messages(response.wsgi_request)]
    assert token_user(raw=one_raw) is None and token_user(raw=two_raw) is None
    assert token_user(raw=kept_raw) == alice
    assert set(ApiToken.objects.filter(revoked_at__isnull=False).values_list("pk", flat=True)) == {one.pk, two.pk}

    again = admin_client.post(changelist, {"action": "revoke", "_selected_action": [one.pk]}, follow=True)
    assert "Revoked 0 API token(s)." in [str(m) for m in get_messages(again.wsgi_request)]


def test_the_token_changelist_loads_with_search_and_filters(admin_client, make_user):
    alice, bob = make_user("alice"), make_user("bob")
    token_create(user=alice, name="alice-laptop")
    revoked, _ = token_create(user=bob, name="bob-script")
    ApiToken.objects.filter(pk=revoked.pk).update(revoked_at=revoked.created_at)
    changelist = reverse("admin:accounts_apitoken_changelist")

    page = admin_client.get(changelist)
    assert page.status_code == 200
    assert "alice-laptop" in page.content.decode() and "bob-script" in page.content.decode()

    searched = admin_client.get(changelist, {"q": "alice"})
    assert searched.status_code == 200
    assert [t.name for t in searched.context["cl"].result_list] == ["alice-laptop"]

    active = admin_client.get(changelist, {"revoked_at__isempty": "1"})
    assert active.status_code == 200
    assert [t.name for t in active.context["cl"].result_list] == ["alice-laptop"]


# --- looking tokens up ------------------------------------------------------------------------------


def test_many_tokens_are_looked_up_in_one_query(make_user, django_assert_num_queries):
    alice, bob, carol = make_user("alice"), make_user("bob"), make_user("carol", is_active=False)
    (_, a), (_, b), (_, c) = token_create(user=alice), token_create(user=bob), token_create(user=carol)
    revoked, r = token_create(user=alice)
    revoked.revoked_at = revoked.created_at
    revoked.save()
    raws = [a, b, a, r, c, "ct_unknown", "", "x" * 201]
    with django_assert_num_queries(1):
        users = tokens_users(raws=raws)
    assert users == [alice, bob, alice, None, None, None, None, None]
    assert users[0] is not users[2], "two handshakes with one token get a user instance each"


def test_implausible_tokens_cost_no_query(django_assert_num_queries):
    with django_assert_num_queries(0):
        assert tokens_users(raws=["", "x" * 201]) == [None, None]
