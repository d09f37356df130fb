from django.contrib import admin, messages

from accounts.models import ApiToken
from accounts.services import token_key_new, tokens_revoke


class SecretKeyAdmin(admin.ModelAdmin):
    """A hashed secret (API token, service key): the raw key is shown once, when it is
    created; afterwards the row is read-only and can be revoked. Subclasses name the
    fields set at creation, those fixed after it, and the two services."""

    add_fields: list[str] = []
    fixed_fields: list[str] = []
    list_filter = [("revoked_at", admin.EmptyFieldListFilter), "created_at"]
    readonly_fields = ["prefix", "created_at", "last_used_at", "revoked_at"]
    actions = ["revoke"]

    def key_new(self, obj) -> str:
        raise NotImplementedError

    def keys_revoke(self, queryset) -> int:
        raise NotImplementedError

    def created_message(self, obj, raw: str) -> str:
        raise NotImplementedError

    @admin.display(boolean=True)
    def active(self, obj) -> bool:
        return obj.is_active

    def get_fields(self, request, obj=None):
        return self.add_fields if obj is None else [*self.add_fields, *self.readonly_fields]

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else [*self.fixed_fields, *self.readonly_fields]

    def save_model(self, request, obj, form, change):
        if not change:
            raw = self.key_new(obj)
            messages.warning(request, f"{self.created_message(obj, raw)} — copy it now, it is not shown again.")
        super().save_model(request, obj, form, change)

    @admin.action(description="Revoke selected %(verbose_name_plural)s", permissions=["change"])
    def revoke(self, request, queryset):
        count = self.keys_revoke(queryset)
        self.message_user(request, f"Revoked {count} {self.model._meta.verbose_name}(s).")


@admin.register(ApiToken)
class ApiTokenAdmin(SecretKeyAdmin):
    list_display = ["prefix", "user", "name", "created_at", "last_used_at", "revoked_at", "active"]
    search_fields = ["user__username", "name", "prefix"]
    list_select_related = ["user"]
    raw_id_fields = ["user"]
    add_fields = ["user", "name"]
    fixed_fields = ["user"]

    def key_new(self, obj) -> str:
        return token_key_new(token=obj)

    def keys_revoke(self, queryset) -> int:
        return tokens_revoke(tokens=queryset)

    def created_message(self, obj, raw: str) -> str:
        return f"New token for {obj.user}: {raw}"
