"""Service keys: creation, hashing, revocation, authentication, the command, the admin."""

from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.urls import reverse
from django.utils import timezone

from presence.models import ServiceKey
from presence.selectors import service_key_authenticate
from presence.services.keys import (
    ServiceKeyNameTaken,
    service_key_create,
    service_key_hash,
    service_keys_revoke,
)

pytestmark = pytest.mark.django_db


def test_created_key_is_stored_only_as_its_hash_with_a_display_prefix():
    key, raw = service_key_create(name="billing")
    assert raw.startswith("sk_") and len(raw) > 40
    key.refresh_from_db()
    assert key.key_hash == service_key_hash(raw) and raw not in key.key_hash
    assert raw.startswith(key.prefix) and len(key.prefix) == 10
    assert key.is_active and key.revoked_at is None


def test_two_keys_never_share_a_secret():
    _, first = service_key_create(name="one")
    _, second = service_key_create(name="two")
    assert first != second


def test_a_second_key_with_the_same_name_is_refused():
    service_key_create(name="billing")
    with pytest.raises(ServiceKeyNameTaken):
        service_key_create(name="billing")
    assert ServiceKey.objects.count() == 1


@pytest.mark.parametrize("name", ["", "   ", "x" * 101])
def test_blank_or_long_names_are_refused(name):
    with pytest.raises(ValueError):
        service_key_create(name=name)


def test_revoke_is_idempotent_and_counts_newly_revoked_keys():
    first, _ = service_key_create(name="one")
    service_key_create(name="two")
    assert service_keys_revoke(keys=ServiceKey.objects.filter(pk=first.pk)) == 1
    assert service_keys_revoke(keys=ServiceKey.objects.all()) == 1
    assert service_keys_revoke(keys=ServiceKey.objects.all()) == 0
    assert not ServiceKey.objects.filter(revoked_at__isnull=True).exists()


def test_authenticate_returns_the_active_key_only():
    key, raw = service_key_create(name="billing")
    assert service_key_authenticate(raw=raw) == key
    assert service_key_authenticate(raw=raw + "x") is None
    assert service_key_authenticate(raw="") is None
    assert service_key_authenticate(raw="ct_" + raw[3:]) is None
    assert service_key_authenticate(raw="sk_" + "a" * 500) is None
    service_keys_revoke(keys=ServiceKey.objects.filter(pk=key.pk))
    assert service_key_authenticate(raw=raw) is None


def test_authenticate_writes_last_used_at_at_most_once_a_minute(django_assert_num_queries):
    key, raw = service_key_create(name="billing")
    with django_assert_num_queries(2):  # the read, and the first use
        service_key_authenticate(raw=raw)
    key.refresh_from_db()
    first_use = key.last_used_at
    assert first_use is not None
    with django_assert_num_queries(1):  # within the minute: the read only
        service_key_authenticate(raw=raw)
    key.refresh_from_db()
    assert key.last_used_at == first_use
    ServiceKey.objects.filter(pk=key.pk).update(last_used_at=timezone.now() - timedelta(minutes=2))
    with django_assert_num_queries(2):
        service_key_authenticate(raw=raw)
    key.refresh_from_db()
    assert key.last_used_at > first_use


def test_create_service_key_command_prints_the_key_last():
    out, err = StringIO(), StringIO()
    call_command("create_service_key", "billing", stdout=out, stderr=err)
    raw = out.getvalue().strip().splitlines()[-1]
    key = ServiceKey.objects.get(name="billing")
    assert service_key_authenticate(raw=raw) == key
    assert raw not in err.getvalue()


def test_create_service_key_command_refuses_a_taken_name():
    call_command("create_service_key", "billing", stdout=StringIO(), stderr=StringIO())
    with pytest.raises(CommandError, match="already exists"):
        call_command("create_service_key", "billing", stdout=StringIO(), stderr=StringIO())
    assert ServiceKey.objects.count() == 1


def test_admin_creates_a_key_and_shows_it_once(admin_client):
    response = admin_client.post(reverse("admin:presence_servicekey_add"), {"name": "billing"}, follow=True)
    assert response.status_code == 200
    shown = [str(m) for m in response.context["messages"] if "sk_" in str(m)]
    assert len(shown) == 1
    raw = next(word for word in shown[0].split() if word.startswith("sk_"))
    assert service_key_authenticate(raw=raw) == ServiceKey.objects.get(name="billing")
    listing = admin_client.get(reverse("admin:presence_servicekey_changelist"))
    assert listing.status_code == 200 and raw not in listing.content.decode()


def test_admin_revoke_action_revokes_the_selected_keys(admin_client):
    keep, keep_raw = service_key_create(name="keep")
    drop, drop_raw = service_key_create(name="drop")
    response = admin_client.post(
        reverse("admin:presence_servicekey_changelist"),
        {"action": "revoke", "_selected_action": [drop.pk]},
        follow=True,
    )
    assert "Revoked 1 service key(s)." in [str(m) for m in response.context["messages"]]
    assert service_key_authenticate(raw=drop_raw) is None
    assert service_key_authenticate(raw=keep_raw) == keep


def test_admin_change_page_shows_no_secret_and_keeps_the_name_fixed(admin_client):
    key, raw = service_key_create(name="billing")
    page = admin_client.get(reverse("admin:presence_servicekey_change", args=[key.pk]))
    assert page.status_code == 200
    body = page.content.decode()
    assert raw not in body and key.key_hash not in body and key.prefix in body
