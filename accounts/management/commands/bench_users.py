"""`manage.py bench_users N --prefix bench --out tokens.txt`: users and tokens for load tests.

Creates users PREFIX-0 … PREFIX-(N-1) (no usable password: token only), reusing the ones
that exist, gives each one new API token, and writes the raw tokens one per line, in user
order, to --out. Everything is bulk inserted in one transaction, so 10,000 users take a few
seconds. Tokens are stored hashed (accounts.services.token_hash) like any other token.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import make_password
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction

from accounts.models import ApiToken
from accounts.services import token_key_new

BATCH = 1000
TOKEN_NAME = "bench"


def bench_usernames(*, prefix: str, count: int) -> list[str]:
    return [f"{prefix}-{i}" for i in range(count)]


class Command(BaseCommand):
    help = "Create N users (or reuse them) with one new API token each; write the tokens one per line to --out."

    def add_arguments(self, parser):
        parser.add_argument("count", type=int, help="how many users")
        parser.add_argument("--prefix", default="bench", help="usernames are PREFIX-0 … PREFIX-(N-1)")
        parser.add_argument("--out", required=True, help="file to write the raw tokens to, one per line")

    def handle(self, *args, count, prefix, out, **options):
        if count < 1:
            raise CommandError("N must be at least 1")
        if not prefix or not all(c.isalnum() or c in "@.+-_" for c in prefix):
            raise CommandError("the prefix may hold letters, digits and @ . + - _ only")
        started = time.monotonic()
        User = get_user_model()
        names = bench_usernames(prefix=prefix, count=count)
        with transaction.atomic():
            existing = self._existing(User, prefix=prefix, wanted=set(names))
            # The unusable-password marker, made once: hashing per user is what makes
            # create_user slow, and these users log in with their token only.
            unusable = make_password(None)
            new = [User(username=name, password=unusable) for name in names if name not in existing]
            User.objects.bulk_create(new, batch_size=BATCH)
            if new:
                existing = self._existing(User, prefix=prefix, wanted=set(names))
            # A reused user that was deactivated would be refused at the handshake.
            inactive = [pk for name, (pk, active) in existing.items() if not active]
            for start in range(0, len(inactive), BATCH):
                User.objects.filter(pk__in=inactive[start : start + BATCH]).update(is_active=True)
            tokens, raws = [], []
            for name in names:
                token = ApiToken(user_id=existing[name][0], name=TOKEN_NAME)
                raws.append(token_key_new(token=token))
                tokens.append(token)
            ApiToken.objects.bulk_create(tokens, batch_size=BATCH)
        path = Path(out)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("\n".join(raws) + "\n")
        os.replace(tmp, path)  # a reader never sees half a file
        self.stderr.write(
            f"{len(new)} users created, {count - len(new)} reused ({len(inactive)} reactivated), {count} tokens written to {path} "
            f"in {time.monotonic() - started:.1f}s"
        )

    @staticmethod
    def _existing(User, *, prefix: str, wanted: set[str]) -> dict[str, tuple[int, bool]]:
        """{username: (pk, is_active)} of the wanted users that exist: one prefix scan,
        not an IN list of 10,000 values (SQLite limits query parameters)."""
        rows = User.objects.filter(username__startswith=f"{prefix}-").values_list("username", "pk", "is_active")
        return {name: (pk, active) for name, pk, active in rows if name in wanted}
