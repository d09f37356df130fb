from django.core.management.base import BaseCommand, CommandError

from presence.services.keys import ServiceKeyNameTaken, service_key_create


class Command(BaseCommand):
    help = "Create a service key for the HTTP API and print it as the last line of output."

    def add_arguments(self, parser):
        parser.add_argument("name", help="a unique label for the service, shown in the admin")

    def handle(self, *args, name, **options):
        try:
            key, raw = service_key_create(name=name)
        except ServiceKeyNameTaken:
            raise CommandError(
                f"a service key named '{name.strip()}' already exists (revoked keys keep their names); "
                "choose another name"
            ) from None
        except ValueError as exc:
            raise CommandError(str(exc)) from None
        self.stderr.write(f"Created service key '{key.name}' ({key.prefix}…). It is not shown again:")
        self.stdout.write(raw)
