"""List filters of the presence admin. Each one is cheap on a big table: lookups come
from open rows or from small tables, never from a scan of closed connections."""

from __future__ import annotations

import re

from django.contrib import admin
from django.utils import timezone

from presence.models import Connection, ServerProcess
from presence.selectors import connections_open
from rooms.policies import ROOM_SLUG_PATTERN

# The room filter offers at most this many rooms, read from at most this many distinct
# `rooms` values of open connections (each value is one combination of rooms).
ROOM_LOOKUPS_SHOWN = 50
ROOM_COMBINATIONS_READ = 500
SERVER_LOOKUPS_SHOWN = 50


class ModeratorFilter(admin.RelatedOnlyFieldListFilter):
    """``by``, the moderators who acted (titled so that it does not read "By by")."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.title = "moderator"


class DefaultChoiceFilter(admin.SimpleListFilter):
    """A filter with a default choice instead of "All" (which is then one of the lookups)."""

    default: str = ""

    def value(self):
        return super().value() or self.default

    def choices(self, changelist):
        for lookup, title in self.lookup_choices:
            yield {
                "selected": self.value() == lookup,
                "query_string": changelist.get_query_string({self.parameter_name: lookup}),
                "display": title,
            }


class ConnectionStatusFilter(DefaultChoiceFilter):
    """Open (the default) means what the rest of presence means: not closed, on a process
    whose lease is alive. A crashed process's rows are "awaiting sweep" until closed."""

    title = "status"
    parameter_name = "status"
    default = "open"

    def lookups(self, request, model_admin):
        return [("open", "Open"), ("orphaned", "Awaiting sweep"), ("closed", "Closed"), ("all", "All")]

    def queryset(self, request, queryset):
        match self.value():
            case "open":
                return queryset & connections_open()
            case "orphaned":
                return queryset.filter(closed_at__isnull=True).exclude(pk__in=connections_open().values("pk"))
            case "closed":
                return queryset.filter(closed_at__isnull=False)
        return queryset


class ConnectionRoomFilter(admin.SimpleListFilter):
    """Connections in a room. `rooms` holds " general random ", so the match is
    `rooms__contains=" general "`; the lookups are the rooms of open connections."""

    title = "room"
    parameter_name = "room"

    def lookups(self, request, model_admin):
        combinations = (
            Connection.objects.filter(closed_at__isnull=True)
            .values_list("rooms", flat=True)
            .order_by()
            .distinct()[:ROOM_COMBINATIONS_READ]
        )
        slugs = sorted({slug for rooms in combinations for slug in rooms.split()})[:ROOM_LOOKUPS_SHOWN]
        selected = self.value()
        if selected and selected not in slugs and re.fullmatch(ROOM_SLUG_PATTERN, selected):
            slugs.append(selected)
        return [(slug, f"#{slug}") for slug in slugs]

    def queryset(self, request, queryset):
        slug = self.value()
        if not slug:
            return queryset
        if not re.fullmatch(ROOM_SLUG_PATTERN, slug):
            return queryset.none()
        return queryset.filter(rooms__contains=f" {slug} ")


class ConnectionServerFilter(admin.SimpleListFilter):
    """The processes that are not stopped (a handful of rows), not every process ever."""

    title = "server process"
    parameter_name = "server"

    def lookups(self, request, model_admin):
        servers = ServerProcess.objects.filter(stopped_at__isnull=True).order_by("name")
        choices = [(str(pk), name) for pk, name in servers.values_list("pk", "name")[:SERVER_LOOKUPS_SHOWN]]
        selected = self.value()
        if selected and selected.isdigit() and selected not in {pk for pk, _ in choices}:
            extra = ServerProcess.objects.filter(pk=selected).values_list("pk", "name")
            choices += [(str(pk), name) for pk, name in extra]
        return choices

    def queryset(self, request, queryset):
        value = self.value()
        if not value:
            return queryset
        return queryset.filter(server_id=value) if value.isdigit() else queryset.none()


class UsernameFilter(admin.SimpleListFilter):
    """``?user=<username>``: one user's rows. It lists no choices of its own (the user
    column links to it), so it shows in the sidebar only while it is in use."""

    title = "user"
    parameter_name = "user"

    def lookups(self, request, model_admin):
        selected = self.value()
        return [(selected, selected)] if selected else []

    def queryset(self, request, queryset):
        value = self.value()
        return queryset.filter(user__username=value) if value else queryset


class BlockStatusFilter(DefaultChoiceFilter):
    title = "status"
    parameter_name = "status"
    default = "active"

    def lookups(self, request, model_admin):
        return [("active", "Active"), ("expired", "Expired"), ("lifted", "Lifted"), ("all", "All")]

    def queryset(self, request, queryset):
        now = timezone.now()
        match self.value():
            case "active":
                return queryset.filter(lifted_at__isnull=True, until__gt=now)
            case "expired":
                return queryset.filter(lifted_at__isnull=True, until__lte=now)
            case "lifted":
                return queryset.filter(lifted_at__isnull=False)
        return queryset


class FlagStatusFilter(DefaultChoiceFilter):
    title = "status"
    parameter_name = "status"
    default = "open"

    def lookups(self, request, model_admin):
        return [("open", "Open"), ("cleared", "Cleared"), ("all", "All")]

    def queryset(self, request, queryset):
        match self.value():
            case "open":
                return queryset.filter(cleared_at__isnull=True)
            case "cleared":
                return queryset.filter(cleared_at__isnull=False)
        return queryset
