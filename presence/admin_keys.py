"""Admin for service keys: create (the key is shown once), list, revoke.
Imported by presence/admin.py, which registers it with the admin site."""

from django.contrib import admin

from accounts.admin import SecretKeyAdmin
from presence.models import ServiceKey
from presence.services.keys import service_key_new, service_keys_revoke


@admin.register(ServiceKey)
class ServiceKeyAdmin(SecretKeyAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at", "active"]
    search_fields = ["name", "prefix"]
    add_fields = ["name"]
    # A key's name is how logs and the admin refer to it: fixed once created.
    fixed_fields = ["name"]

    def key_new(self, obj) -> str:
        return service_key_new(key=obj)

    def keys_revoke(self, queryset) -> int:
        return service_keys_revoke(keys=queryset)

    def created_message(self, obj, raw: str) -> str:
        return f"New service key '{obj.name}': {raw}"
