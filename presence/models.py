"""The connection registry, moderation records, abuse flags and service keys.

Hot state (who is in which room, connect counters, cool-downs, process leases) lives
in Redis (presence/store.py); these tables are the durable, queryable record that the
admin and the HTTP API read. A connection row costs one insert at connect and one
update at close; last_seen, round-trip time and rooms are flushed in one batch per
process per heartbeat, never per frame.
"""

from django.conf import settings
from django.db import models
from django.db.models import Q


class ServerProcess(models.Model):
    """A daphne process that has served connections. Alive while its Redis lease is."""

    name = models.CharField(max_length=100, unique=True, help_text="host-pid-random, unique per process run")
    hostname = models.CharField(max_length=100)
    pid = models.PositiveIntegerField()
    started_at = models.DateTimeField(auto_now_add=True)
    last_heartbeat = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True, help_text="when its connections were closed")

    class Meta:
        ordering = ["-started_at"]
        verbose_name = "server process"
        verbose_name_plural = "server processes"

    def __str__(self) -> str:
        return self.name


class Connection(models.Model):
    """One WebSocket, from connect to close."""

    id = models.CharField(primary_key=True, max_length=32, editable=False)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="connections")
    server = models.ForeignKey(ServerProcess, on_delete=models.CASCADE, related_name="connections")
    channel_name = models.CharField(max_length=120, db_index=True)
    ip = models.GenericIPAddressField(null=True, blank=True)
    user_agent = models.CharField(max_length=300, blank=True)
    # Room names, space-delimited with a leading and trailing space (" general random "),
    # so "in room X" is `rooms__contains=" X "` on every database. Flushed per heartbeat.
    rooms = models.CharField(max_length=2000, default=" ", blank=True)
    connected_at = models.DateTimeField(db_index=True)
    last_seen = models.DateTimeField()
    rtt_ms = models.PositiveIntegerField(null=True, blank=True, help_text="last round trip reported by the client")
    closed_at = models.DateTimeField(null=True, blank=True)
    close_code = models.PositiveIntegerField(null=True, blank=True)
    close_reason = models.CharField(max_length=200, blank=True)

    class Meta:
        ordering = ["-connected_at"]
        indexes = [
            # The changelist's default view: open connections, newest first.
            models.Index(fields=["-connected_at"], condition=Q(closed_at__isnull=True), name="connection_open_recent"),
            models.Index(fields=["user", "closed_at"], name="connection_user_open"),
            models.Index(fields=["server", "closed_at"], name="connection_server_open"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_open(self) -> bool:
        return self.closed_at is None

    @property
    def room_list(self) -> list[str]:
        return self.rooms.split()


class ModerationAction(models.Model):
    """Who did what to whom, when and why: every kick, block and unblock."""

    class Kind(models.TextChoices):
        KICK = "kick", "kick"
        BLOCK = "block", "block"
        UNBLOCK = "unblock", "unblock"

    kind = models.CharField(max_length=10, choices=Kind.choices)
    by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="moderation_actions"
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    connection = models.ForeignKey(Connection, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    reason = models.CharField(max_length=200, blank=True)
    until = models.DateTimeField(null=True, blank=True, help_text="for a block: when it ends")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.kind} {self.user or self.ip}"


class Block(models.Model):
    """A user or an IP refused at the handshake until ``until``."""

    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="blocks"
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    until = models.DateTimeField()
    reason = models.CharField(max_length=200, blank=True)
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    lifted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.CheckConstraint(condition=Q(user__isnull=False) | Q(ip__isnull=False), name="block_has_subject")
        ]

    def __str__(self) -> str:
        return f"block {self.user or self.ip} until {self.until:%Y-%m-%d %H:%M}"


class AbuseFlag(models.Model):
    """A user or an IP that connected more often than the window allows."""

    class Kind(models.TextChoices):
        USER = "user", "user"
        IP = "ip", "IP"

    kind = models.CharField(max_length=4, choices=Kind.choices)
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.CASCADE, related_name="abuse_flags"
    )
    ip = models.GenericIPAddressField(null=True, blank=True)
    connects = models.PositiveIntegerField(help_text="connects counted in the window")
    window_seconds = models.PositiveIntegerField()
    first_seen = models.DateTimeField()
    last_seen = models.DateTimeField()
    ips = models.JSONField(default=list, blank=True)
    user_agents = models.JSONField(default=list, blank=True)
    cleared_at = models.DateTimeField(null=True, blank=True)
    cleared_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )

    class Meta:
        ordering = ["-last_seen"]
        indexes = [models.Index(fields=["cleared_at", "-last_seen"], name="abuseflag_open")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} {self.user or self.ip}: {self.connects} in {self.window_seconds}s"

    @property
    def is_open(self) -> bool:
        return self.cleared_at is None


class ServiceKey(models.Model):
    """A key for backend services calling the HTTP API. Only its SHA-256 is stored."""

    name = models.CharField(max_length=100, unique=True)
    prefix = models.CharField(max_length=12)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None
