from django.contrib import admin

from presence.services.moderation import KICK_REASON_DEFAULT, room_kick
from rooms.models import Conversation, Message, Room


@admin.register(Room)
class RoomAdmin(admin.ModelAdmin):
    list_display = ["slug", "title", "is_public", "created_by", "created_at"]
    list_filter = ["is_public", "created_at"]
    search_fields = ["slug", "title"]
    filter_horizontal = ["members"]
    raw_id_fields = ["created_by"]
    date_hierarchy = "created_at"
    actions = ["kick_everyone"]

    @admin.action(description="Kick everyone in these rooms", permissions=["kick"])
    def kick_everyone(self, request, queryset):
        room_ids = list(queryset.values_list("pk", flat=True))
        count = sum(room_kick(room_id=pk, by=request.user, reason=KICK_REASON_DEFAULT) for pk in room_ids)
        self.message_user(request, f"Kicked {count} connection(s).")

    def has_kick_permission(self, request) -> bool:
        # The same permission as kicking from the connection list (presence/admin.py).
        return request.user.has_perm("presence.change_connection")


@admin.register(Message)
class MessageAdmin(admin.ModelAdmin):
    list_display = ["id", "created_at", "sender", "where", "short_body", "client_id"]
    list_filter = [("room", admin.RelatedOnlyFieldListFilter), "created_at"]
    search_fields = ["body", "sender__username", "room__slug", "client_id"]
    list_select_related = ["sender", "recipient", "room"]
    raw_id_fields = ["room", "conversation", "sender", "recipient"]
    date_hierarchy = "created_at"
    show_full_result_count = False  # COUNT(*) over all messages is the slow part of a big changelist

    @admin.display(description="room / to")
    def where(self, obj: Message) -> str:
        return f"#{obj.room.slug}" if obj.room_id else f"@{obj.recipient.username}"

    @admin.display(description="body")
    def short_body(self, obj: Message) -> str:
        return obj.body if len(obj.body) <= 80 else obj.body[:79] + "…"


@admin.register(Conversation)
class ConversationAdmin(admin.ModelAdmin):
    list_display = ["id", "user_low", "user_high", "created_at"]
    search_fields = ["user_low__username", "user_high__username"]
    list_select_related = ["user_low", "user_high"]
    raw_id_fields = ["user_low", "user_high"]
