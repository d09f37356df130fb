"""`manage.py bench_users`: users and tokens for load tests, made in bulk."""

import time

import pytest
from django.contrib.auth import get_user_model
from django.core.management import call_command
from django.core.management.base import CommandError

from accounts.models import ApiToken
from accounts.selectors import token_user
from accounts.services import token_hash

pytestmark = pytest.mark.django_db


def make(tmp_path, count: int, *, prefix: str = "load", name: str = "tokens.txt") -> list[str]:
    out = tmp_path / name
    call_command("bench_users", str(count), "--prefix", prefix, "--out", str(out))
    return out.read_text().split()


def test_bench_users_writes_one_working_token_per_user_in_user_order(tmp_path):
    tokens = make(tmp_path, 25)
    assert len(tokens) == 25 and len(set(tokens)) == 25
    assert [token_user(raw=t).username for t in tokens] == [f"load-{i}" for i in range(25)]


def test_bench_users_have_no_usable_password(tmp_path):
    make(tmp_path, 3)
    users = get_user_model().objects.filter(username__startswith="load-")
    assert users.count() == 3
    assert not any(user.has_usable_password() for user in users)


def test_bench_tokens_are_stored_hashed_only(tmp_path):
    tokens = make(tmp_path, 5)
    stored = set(ApiToken.objects.values_list("key_hash", flat=True))
    assert stored == {token_hash(t) for t in tokens}
    assert not ApiToken.objects.filter(key_hash__in=tokens).exists()


def test_rerun_reuses_the_users_and_writes_new_tokens(tmp_path):
    first = make(tmp_path, 10, name="first.txt")
    second = make(tmp_path, 15, name="second.txt")
    assert get_user_model().objects.filter(username__startswith="load-").count() == 15
    assert not set(first) & set(second)
    assert token_user(raw=first[3]) == token_user(raw=second[3])  # the same user, old token still valid
    assert [token_user(raw=t).username for t in second] == [f"load-{i}" for i in range(15)]


def test_rerun_reactivates_a_deactivated_bench_user(tmp_path):
    make(tmp_path, 2, name="first.txt")
    get_user_model().objects.filter(username="load-1").update(is_active=False)
    tokens = make(tmp_path, 2, name="second.txt")
    assert token_user(raw=tokens[1]).username == "load-1"


def test_bench_users_inserts_in_bulk(tmp_path, django_assert_max_num_queries):
    # 2,500 users and tokens: batched INSERTs (SQLite caps the parameters of one statement,
    # so about 45 batches) and two SELECTs, not 5,000 queries.
    with django_assert_max_num_queries(60):
        tokens = make(tmp_path, 2500)
    assert len(tokens) == 2500


def test_ten_thousand_users_take_a_few_seconds(tmp_path):
    started = time.monotonic()
    tokens = make(tmp_path, 10_000)
    assert len(tokens) == 10_000
    assert time.monotonic() - started < 20  # about 2 s here; generous for a loaded CI machine


@pytest.mark.parametrize(("count", "prefix"), [("0", "bench"), ("5", "bad prefix"), ("5", "")])
def test_bench_users_refuses_a_bad_count_or_prefix(tmp_path, count, prefix):
    with pytest.raises(CommandError):
        call_command("bench_users", count, "--prefix", prefix, "--out", str(tmp_path / "t.txt"))
