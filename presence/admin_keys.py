"""Admin for service keys: create (the key is shown once), list, revoke.
Imported by presence/admin.py, which registers it with the admin site."""

from django.contrib import admin, messages

from presence.models import ServiceKey
from presence.services.keys import service_key_new, service_keys_revoke


@admin.register(ServiceKey)
class ServiceKeyAdmin(admin.ModelAdmin):
    list_display = ["name", "prefix", "created_at", "last_used_at", "revoked_at", "active"]
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "created_at"]
    search_fields = ["name", "prefix"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    @admin.display(boolean=True)
    def active(self, obj: ServiceKey) -> bool:
        return obj.is_active

    def get_fields(self, request, obj=None):
        return ["name"] if obj is None else ["name", *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        # A key's name is how logs and the admin refer to it: fixed once created.
        return [] if obj is None else ["name", *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if not change:
            raw = service_key_new(key=obj)
            messages.warning(request, f"New service key '{obj.name}': {raw} — copy it now, it is not shown again.")
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected service keys", permissions=["change"])
    def revoke(self, request, queryset):
        count = service_keys_revoke(keys=queryset)
        self.message_user(request, f"Revoked {count} service key(s).")
