"""The moderators' side of presence, like django-axes: read-only views of the connection
registry, moderation records, blocks, abuse flags and server processes, whose actions
hand off to presence.services.moderation and report a count.

Each action carries its own permission (superusers hold them all):

- ``kick`` (Kick; Kick all connections of these users; the room and user kicks):
  ``presence.change_connection``, since the registry itself is never edited by hand;
- ``block`` (Kick and block for …; Block for …; adding a block): ``presence.add_block``;
- ``unblock`` (Unblock): ``presence.change_block``;
- ``clear`` (Clear abuse flags): ``presence.change_abuseflag``.
"""

from __future__ import annotations

from urllib.parse import urlencode

from asgiref.sync import async_to_sync
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.auth import get_user_model
from django.contrib.auth.admin import UserAdmin as DjangoUserAdmin
from django.db.models import BooleanField, Count, Q, QuerySet, Value
from django.db.models.expressions import Case, When
from django.template.response import TemplateResponse
from django.urls import reverse
from django.utils import timezone
from django.utils.html import format_html

from presence import store
from presence.admin_filters import (
    BlockStatusFilter,
    ConnectionRoomFilter,
    ConnectionServerFilter,
    ConnectionStatusFilter,
    FlagStatusFilter,
    ModeratorFilter,
    UsernameFilter,
)
from presence.admin_forms import BlockAddForm, BlockDurationForm, duration_label
from presence.models import AbuseFlag, Block, Connection, ModerationAction, ServerProcess
from presence.services.moderation import (
    KICK_REASON_DEFAULT,
    blocks_lift,
    blocks_unblock_subjects,
    connections_kick,
    flags_block,
    flags_clear,
    ips_block,
    users_block,
    users_kick,
)

User = get_user_model()

# The kick-and-block confirmation names at most this many of the users it will block.
CONFIRM_USERS_SHOWN = 20


class ModerationPermissions:
    """``has_<name>_permission`` for ``@admin.action(permissions=[name])``."""

    def has_kick_permission(self, request) -> bool:
        return request.user.has_perm("presence.change_connection")

    def has_block_permission(self, request) -> bool:
        return request.user.has_perm("presence.add_block")

    def has_unblock_permission(self, request) -> bool:
        return request.user.has_perm("presence.change_block")

    def has_clear_permission(self, request) -> bool:
        return request.user.has_perm("presence.change_abuseflag")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Viewable with the view (or change) permission; nothing is added, edited or
    deleted here: rows change only through the services the actions call."""

    def has_add_permission(self, request) -> bool:
        return False

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False


def users_of(connections: QuerySet[Connection]) -> QuerySet:
    return User.objects.filter(pk__in=connections.values("user_id"))


def compact_time(value) -> str | None:
    """Time of day for today, else the date too; the full timestamp in the markup.
    None (shown as the admin's empty value) for no time."""
    if value is None:
        return None
    local = timezone.localtime(value)
    shown = f"{local:%H:%M:%S}" if local.date() == timezone.localdate() else f"{local:%b %d, %H:%M}"
    return format_html(
        '<time datetime="{}" title="{}">{}</time>', value.isoformat(), f"{local:%Y-%m-%d %H:%M:%S %Z}", shown
    )


def age(value) -> str:
    seconds = max(0, int((timezone.now() - value).total_seconds()))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 2 * 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h" if seconds < 2 * 86400 else f"{seconds // 86400} d"


def shortened(values: list[str], *, shown: int) -> str | None:
    """The first few values, and how many more there are (the view page lists them all)."""
    more = len(values) - shown
    return (", ".join(values[:shown]) + (f" (+{more})" if more > 0 else "")) or None


def username_filter_link(username: str) -> str:
    return format_html('<a href="?{}" title="only this user">{}</a>', urlencode({"user": username}), username)


@admin.register(Connection)
class ConnectionAdmin(ModerationPermissions, ReadOnlyAdmin):
    list_display = ["short_id", "user_link", "ip", "room_names", "server", "connected", "seen", "rtt", "close_code"]
    list_display_links = ["short_id"]
    list_filter = [ConnectionStatusFilter, ConnectionServerFilter, ConnectionRoomFilter, UsernameFilter]
    search_fields = ["user__username", "=ip"]
    search_help_text = "A username (or part of one), or an exact IP address."
    list_select_related = ["user", "server"]
    list_per_page = 100
    # A COUNT over every connection ever, and a count per filter choice, are what make
    # a big changelist slow; the page counts only the filtered rows, once.
    show_full_result_count = False
    show_facets = admin.ShowFacets.NEVER
    ordering = ["-connected_at"]
    fields = readonly_fields = [
        "id",
        "user",
        "server",
        "channel_name",
        "ip",
        "user_agent",
        "rooms",
        "connected_at",
        "last_seen",
        "rtt_ms",
        "closed_at",
        "close_code",
        "close_reason",
    ]
    actions = ["kick", "kick_and_block", "kick_users"]

    @admin.display(description="id", ordering="id")
    def short_id(self, obj: Connection) -> str:
        return obj.id[:8]

    @admin.display(description="user", ordering="user__username")
    def user_link(self, obj: Connection) -> str:
        return username_filter_link(obj.user.username)

    @admin.display(description="rooms")
    def room_names(self, obj: Connection) -> str:
        return " ".join(f"#{slug}" for slug in obj.room_list) or None

    @admin.display(description="connected", ordering="connected_at")
    def connected(self, obj: Connection) -> str:
        return compact_time(obj.connected_at)

    @admin.display(description="last seen", ordering="last_seen")
    def seen(self, obj: Connection) -> str:
        return format_html('<time datetime="{}">{} ago</time>', obj.last_seen.isoformat(), age(obj.last_seen))

    @admin.display(description="RTT (ms)", ordering="rtt_ms")
    def rtt(self, obj: Connection) -> int | None:
        return obj.rtt_ms

    def get_list_display(self, request):
        # A close code only means something where closed rows are listed.
        columns = list(super().get_list_display(request))
        return columns if request.GET.get("status") in ("closed", "all") else columns[:-1]

    @admin.action(description="Kick", permissions=["kick"])
    def kick(self, request, queryset):
        count = connections_kick(connections=queryset, by=request.user, reason=KICK_REASON_DEFAULT)
        self.message_user(request, f"Kicked {count} connection(s).")

    @admin.action(description="Kick and block for …", permissions=["block"])
    def kick_and_block(self, request, queryset):
        form = BlockDurationForm(request.POST if "apply" in request.POST else None)
        if not form.is_valid():
            return self.kick_and_block_confirmation(request, queryset, form)
        minutes, reason = form.cleaned_data["minutes"], form.cleaned_data["reason"]
        count = users_block(users=users_of(queryset), by=request.user, minutes=minutes, reason=reason)
        self.message_user(request, f"Blocked {count} user(s) for {duration_label(minutes)} and kicked them.")

    @admin.action(description="Kick all connections of these users", permissions=["kick"])
    def kick_users(self, request, queryset):
        count = users_kick(users=users_of(queryset), by=request.user, reason=KICK_REASON_DEFAULT)
        self.message_user(request, f"Kicked {count} connection(s).")

    def kick_and_block_confirmation(self, request, queryset, form) -> TemplateResponse:
        """The intermediate page: it posts the same selection back with ``apply``."""
        users = users_of(queryset).order_by("username")
        context = {
            **self.admin_site.each_context(request),
            "title": "Kick and block",
            "opts": self.opts,
            "form": form,
            "users_shown": list(users.values_list("username", flat=True)[:CONFIRM_USERS_SHOWN]),
            "users_total": users.count(),
            "open_connections": Connection.objects.filter(user__in=users, closed_at__isnull=True).count(),
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media + form.media,
        }
        return TemplateResponse(request, "admin/presence/connection/kick_and_block.html", context)


@admin.register(ModerationAction)
class ModerationActionAdmin(ReadOnlyAdmin):
    list_display = ["when", "kind", "by", "user", "ip", "reason", "ends", "connection_short"]
    list_filter = ["kind", ("by", ModeratorFilter), ("created_at", admin.DateFieldListFilter)]
    search_fields = ["user__username", "by__username", "=ip"]
    search_help_text = "A username (of the moderator or the moderated), or an exact IP address."
    list_select_related = ["by", "user"]
    show_full_result_count = False
    fields = readonly_fields = ["created_at", "kind", "by", "user", "ip", "connection_id", "reason", "until"]

    @admin.display(description="when", ordering="created_at")
    def when(self, obj: ModerationAction) -> str:
        return compact_time(obj.created_at)

    @admin.display(description="until", ordering="until")
    def ends(self, obj: ModerationAction) -> str | None:
        return compact_time(obj.until)

    @admin.display(description="connection")
    def connection_short(self, obj: ModerationAction) -> str | None:
        return obj.connection_id[:8] if obj.connection_id else None


@admin.register(Block)
class BlockAdmin(ModerationPermissions, admin.ModelAdmin):
    """Blocks are added through users_block / ips_block (which also kick and deny at the
    handshake), lifted through blocks_lift, and otherwise never edited."""

    list_display = ["subject", "ends", "status", "reason", "created_by", "created", "lifted"]
    list_filter = [BlockStatusFilter]
    search_fields = ["user__username", "=ip"]
    list_select_related = ["user", "created_by"]
    autocomplete_fields = ["user"]
    show_full_result_count = False
    actions = ["unblock"]
    view_fields = ["user", "ip", "until", "reason", "created_by", "created_at", "lifted_at"]

    @admin.display(description="user or IP")
    def subject(self, obj: Block) -> str:
        return obj.user.username if obj.user_id else obj.ip

    @admin.display(description="until", ordering="until")
    def ends(self, obj: Block) -> str | None:
        return compact_time(obj.until)

    @admin.display(description="created", ordering="created_at")
    def created(self, obj: Block) -> str | None:
        return compact_time(obj.created_at)

    @admin.display(description="lifted", ordering="lifted_at")
    def lifted(self, obj: Block) -> str | None:
        return compact_time(obj.lifted_at)

    @admin.display(description="status")
    def status(self, obj: Block) -> str:
        if obj.lifted_at:
            return "lifted"
        return "active" if obj.until > timezone.now() else "expired"

    def has_change_permission(self, request, obj=None) -> bool:
        return False

    def has_delete_permission(self, request, obj=None) -> bool:
        return False

    def get_fields(self, request, obj=None):
        return BlockAddForm.Meta.fields if obj is None else self.view_fields

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.view_fields

    def get_form(self, request, obj=None, **kwargs):
        if obj is None:
            kwargs["form"] = BlockAddForm
        return super().get_form(request, obj, **kwargs)

    def save_model(self, request, obj, form, change):
        minutes, reason = form.cleaned_data["minutes"], obj.reason
        if obj.user_id:
            users_block(users=[obj.user], by=request.user, minutes=minutes, reason=reason)
        else:
            ips_block(ips=[obj.ip], by=request.user, minutes=minutes, reason=reason)
        # The service created the row; the admin's message and log entry refer to it.
        created = Block.objects.filter(created_by=request.user).latest("pk")
        obj.pk, obj.until, obj.reason, obj.created_at = created.pk, created.until, created.reason, created.created_at

    @admin.action(description="Unblock", permissions=["unblock"])
    def unblock(self, request, queryset):
        count = blocks_lift(blocks=queryset, by=request.user)
        self.message_user(request, f"Lifted {count} block(s).")


@admin.register(AbuseFlag)
class AbuseFlagAdmin(ModerationPermissions, ReadOnlyAdmin):
    list_display = ["subject", "kind", "rate", "first", "last", "ip_list", "agent_list", "status"]
    list_filter = [FlagStatusFilter, "kind"]
    search_fields = ["user__username", "=ip"]
    search_help_text = "A username, or the exact IP address of an IP flag."
    list_select_related = ["user"]
    show_full_result_count = False
    fields = readonly_fields = [
        "kind",
        "user",
        "ip",
        "connects",
        "window_seconds",
        "first_seen",
        "last_seen",
        "ips",
        "user_agents",
        "cleared_at",
        "cleared_by",
    ]
    actions = ["clear", "block_10m", "block_1h", "block_24h", "unblock"]

    @admin.display(description="user or IP")
    def subject(self, obj: AbuseFlag) -> str:
        return obj.user.username if obj.user_id else obj.ip

    @admin.display(description="connects", ordering="connects")
    def rate(self, obj: AbuseFlag) -> str:
        return f"{obj.connects} in {obj.window_seconds} s"

    @admin.display(description="first seen", ordering="first_seen")
    def first(self, obj: AbuseFlag) -> str:
        return compact_time(obj.first_seen)

    @admin.display(description="last seen", ordering="last_seen")
    def last(self, obj: AbuseFlag) -> str:
        return compact_time(obj.last_seen)

    @admin.display(description="IPs")
    def ip_list(self, obj: AbuseFlag) -> str:
        return shortened(obj.ips, shown=2)

    @admin.display(description="user agents")
    def agent_list(self, obj: AbuseFlag) -> str:
        agents = [ua if len(ua) <= 40 else ua[:39] + "…" for ua in obj.user_agents]
        return shortened(agents, shown=1)

    @admin.display(description="status")
    def status(self, obj: AbuseFlag) -> str:
        return "open" if obj.is_open else "cleared"

    @admin.action(description="Clear (close the flag, end its cool-down)", permissions=["clear"])
    def clear(self, request, queryset):
        count = flags_clear(flags=queryset, by=request.user)
        self.message_user(request, f"Cleared {count} flag(s).")

    @admin.action(description="Block for 10 minutes", permissions=["block"])
    def block_10m(self, request, queryset):
        self._block(request, queryset, minutes=10)

    @admin.action(description="Block for 1 hour", permissions=["block"])
    def block_1h(self, request, queryset):
        self._block(request, queryset, minutes=60)

    @admin.action(description="Block for 24 hours", permissions=["block"])
    def block_24h(self, request, queryset):
        self._block(request, queryset, minutes=24 * 60)

    def _block(self, request, queryset, *, minutes: int) -> None:
        count = flags_block(flags=queryset, by=request.user, minutes=minutes)
        self.message_user(request, f"Blocked {count} user(s) or IP(s) for {duration_label(minutes)}.")

    @admin.action(description="Unblock (lift the blocks of these users or IPs)", permissions=["unblock"])
    def unblock(self, request, queryset):
        count = blocks_unblock_subjects(flags=queryset, by=request.user)
        self.message_user(request, f"Lifted {count} block(s).")


@admin.register(ServerProcess)
class ServerProcessAdmin(ReadOnlyAdmin):
    list_display = ["name", "hostname", "pid", "started", "heartbeat", "stopped", "lease", "open_connections"]
    search_fields = ["name", "hostname"]
    fields = readonly_fields = ["name", "hostname", "pid", "started_at", "last_heartbeat", "stopped_at"]

    def get_queryset(self, request):
        # One Redis read for the page, and the open count as an annotation: no per-row query.
        alive = async_to_sync(store.servers_alive)()
        lease = Case(When(name__in=alive, then=Value(True)), default=Value(False), output_field=BooleanField())
        return (
            super()
            .get_queryset(request)
            .annotate(
                open_count=Count("connections", filter=Q(connections__closed_at__isnull=True)),
                lease_alive=lease if alive else Value(False, output_field=BooleanField()),
            )
        )

    @admin.display(description="started", ordering="started_at")
    def started(self, obj: ServerProcess) -> str:
        return compact_time(obj.started_at)

    @admin.display(description="last heartbeat", ordering="last_heartbeat")
    def heartbeat(self, obj: ServerProcess) -> str:
        return age(obj.last_heartbeat) + " ago" if obj.last_heartbeat else None

    @admin.display(description="stopped", ordering="stopped_at")
    def stopped(self, obj: ServerProcess) -> str:
        return compact_time(obj.stopped_at)

    @admin.display(description="lease alive", boolean=True)
    def lease(self, obj: ServerProcess) -> bool:
        return obj.lease_alive

    @admin.display(description="open connections", ordering="open_count")
    def open_connections(self, obj: ServerProcess) -> str:
        url = reverse("admin:presence_connection_changelist") + "?" + urlencode({"server": obj.pk, "status": "all"})
        return format_html('<a href="{}">{}</a>', url, obj.open_count)


# --- Users: the stock UserAdmin, plus the two moderation actions ----------------------

if admin.site.is_registered(User):
    admin.site.unregister(User)


@admin.register(User)
class UserAdmin(ModerationPermissions, DjangoUserAdmin):
    actions = [*DjangoUserAdmin.actions, "kick_connections", "block_1h"]

    @admin.action(description="Kick all connections", permissions=["kick"])
    def kick_connections(self, request, queryset):
        count = users_kick(users=queryset, by=request.user, reason=KICK_REASON_DEFAULT)
        self.message_user(request, f"Kicked {count} connection(s).")

    @admin.action(description="Block for 1 hour", permissions=["block"])
    def block_1h(self, request, queryset):
        count = users_block(users=queryset, by=request.user, minutes=60)
        self.message_user(request, f"Blocked {count} user(s) for 1 hour; their connections were kicked.")


try:
    from presence import admin_keys  # noqa: F401 - registers the ServiceKey admin
except ModuleNotFoundError as exc:
    if exc.name != "presence.admin_keys":
        raise
