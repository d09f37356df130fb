from django.apps import AppConfig


class PresenceConfig(AppConfig):
    name = "presence"
    verbose_name = "Presence and moderation"

    def ready(self):
        from presence import signals  # noqa: F401 - connects the receivers
