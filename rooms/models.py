from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from rooms.policies import ROOM_SLUG_PATTERN

room_slug_validator = RegexValidator(
    ROOM_SLUG_PATTERN,
    "Room names are 1 to 64 lowercase letters, digits, '-' or '_', starting with a letter or digit.",
)


class Room(models.Model):
    slug = models.CharField(max_length=64, unique=True, validators=[room_slug_validator])
    title = models.CharField(max_length=120, blank=True)
    is_public = models.BooleanField(
        default=True, help_text="Anyone may join a public room; a private one only its members."
    )
    members = models.ManyToManyField(
        settings.AUTH_USER_MODEL,
        blank=True,
        related_name="member_rooms",
        help_text="Who may join a private room.",
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="created_rooms",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug

    @property
    def display_title(self) -> str:
        return self.title or self.slug


class Conversation(models.Model):
    """The private conversation of two users; user_low has the smaller id."""

    user_low = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    user_high = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["user_low", "user_high"], name="conversation_unique_pair"),
            models.CheckConstraint(condition=Q(user_low__lte=models.F("user_high")), name="conversation_ordered_pair"),
        ]

    def __str__(self) -> str:
        return f"{self.user_low} ↔ {self.user_high}"


class Message(models.Model):
    """A message in a room, or in a private conversation (then with a recipient)."""

    room = models.ForeignKey(Room, null=True, blank=True, on_delete=models.CASCADE, related_name="messages")
    conversation = models.ForeignKey(
        Conversation, null=True, blank=True, on_delete=models.CASCADE, related_name="messages"
    )
    sender = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="sent_messages")
    recipient = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="received_messages",
    )
    body = models.TextField(max_length=4000)
    # NULL, not "", means "no client_id": the partial unique constraint skips NULLs.
    client_id = models.CharField(max_length=64, null=True, blank=True)  # noqa: DJ001
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["id"]
        indexes = [
            # "the 50 messages before id X in this room / conversation" is a range scan.
            models.Index(fields=["room", "id"], name="message_room_id"),
            models.Index(fields=["conversation", "id"], name="message_conversation_id"),
        ]
        constraints = [
            # Idempotent sends: one message per (sender, client_id), enforced by the database.
            models.UniqueConstraint(
                fields=["sender", "client_id"],
                condition=Q(client_id__isnull=False),
                name="message_unique_sender_client_id",
            ),
            models.CheckConstraint(
                condition=(
                    Q(room__isnull=False, conversation__isnull=True, recipient__isnull=True)
                    | Q(room__isnull=True, conversation__isnull=False, recipient__isnull=False)
                ),
                name="message_room_xor_conversation",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.id} by {self.sender_id}"
