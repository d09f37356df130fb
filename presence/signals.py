"""A socket's user is frozen at connect (`scope["user"]`), so whatever ends a user's
right to be connected closes their sockets: logging out, a password change, deactivation."""

from django.contrib.auth import get_user_model
from django.contrib.auth.signals import user_logged_out
from django.db.models.signals import post_save, pre_save
from django.dispatch import receiver

from presence.services.moderation import user_sockets_close

User = get_user_model()


@receiver(user_logged_out)
def close_sockets_on_logout(sender, request, user, **kwargs):
    if user is not None:
        user_sockets_close(user=user, reason="signed out")


@receiver(pre_save, sender=User)
def note_credential_change(sender, instance, update_fields=None, **kwargs):
    if instance.pk is None or (update_fields is not None and not {"password", "is_active"} & set(update_fields)):
        return
    before = User.objects.filter(pk=instance.pk).values("password", "is_active").first()
    if before is None:
        return
    if before["is_active"] and not instance.is_active:
        instance._close_sockets_reason = "account deactivated"
    elif before["password"] != instance.password:
        instance._close_sockets_reason = "password changed"


@receiver(post_save, sender=User)
def close_sockets_on_credential_change(sender, instance, created, **kwargs):
    reason = instance.__dict__.pop("_close_sockets_reason", None)
    if reason and not created:
        user_sockets_close(user=instance, reason=reason)
