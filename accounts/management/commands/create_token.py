from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from accounts.services import token_create


class Command(BaseCommand):
    help = "Create an API token for USERNAME and print it as the last line of output."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--create-user", action="store_true", help="create the user if it does not exist")
        parser.add_argument("--name", default="", help="a label for the token, shown in the admin")

    def handle(self, *args, username, create_user, name, **options):
        User = get_user_model()
        user = User.objects.filter(username=username).first()
        if user is None:
            if not create_user:
                raise CommandError(f"no user '{username}' (pass --create-user to create one)")
            user = User.objects.create_user(username=username)  # no usable password: token only
            self.stderr.write(f"Created user {username} (no password; log in with the token).")
        if not user.is_active:
            raise CommandError(f"user '{username}' is inactive")
        _, raw = token_create(user=user, name=name)
        self.stdout.write(raw)
