"""Drain one daphne process before stopping it: its sockets are closed with 1012 in
batches, so clients reconnect through the load balancer to the other processes, spread
over a few seconds instead of all at once."""

import asyncio
import time

from asgiref.sync import async_to_sync
from channels.layers import get_channel_layer
from django.core.management.base import BaseCommand, CommandError

from presence import store
from presence.models import Connection, ServerProcess
from rooms.events import connection_drain_event


class Command(BaseCommand):
    help = "Close one server process's sockets with 1012 in batches (rolling restarts)."

    def add_arguments(self, parser):
        parser.add_argument("--server", help="the process name (PRESENCE_SERVER_NAME; see --list)")
        parser.add_argument(
            "--list", dest="list_servers", action="store_true", help="list server processes with open connections"
        )
        parser.add_argument("--batch", type=int, default=100, help="sockets closed per batch (default 100)")
        parser.add_argument("--interval", type=float, default=0.5, help="seconds between batches (default 0.5)")
        parser.add_argument("--wait", type=float, default=30, help="seconds to wait for the registry to empty")

    def handle(self, *args, server, list_servers, batch, interval, wait, **options):
        if list_servers or not server:
            for name, count in self.servers():
                self.stdout.write(f"{name}\t{count} open")
            if not server:
                return
        if batch < 1 or interval < 0:
            raise CommandError("--batch must be at least 1 and --interval not negative")
        channels = list(
            Connection.objects.filter(server__name=server, closed_at__isnull=True).values_list(
                "channel_name", flat=True
            )
        )
        # New handshakes that still reach the process are sent on at once, and its
        # health check fails, so the load balancer takes it out.
        async_to_sync(store.draining_set)(server=server, seconds=max(wait * 2, 60))
        if not ServerProcess.objects.filter(name=server).exists():
            # A process that never held a socket has nothing to close (systemd's ExecStop
            # runs this for every stop): the flag alone keeps new sockets away.
            self.stdout.write(f"{server} has no connections on record; marked draining")
            return
        asyncio.run(self.send(channels, batch=batch, interval=interval))
        self.stdout.write(f"sent 1012 to {len(channels)} sockets of {server} in batches of {batch}")
        deadline = time.monotonic() + wait
        left = self.open_count(server)
        while left and time.monotonic() < deadline:
            time.sleep(0.5)  # polling the registry: the closes happen in another process
            left = self.open_count(server)
        if left:
            self.stdout.write(f"{server}: {left} connections still open after {wait:.0f}s")
        else:
            self.stdout.write(f"{server} drained")

    @staticmethod
    def open_count(server: str) -> int:
        return Connection.objects.filter(server__name=server, closed_at__isnull=True).count()

    @staticmethod
    def servers():
        from django.db.models import Count, Q

        rows = ServerProcess.objects.filter(stopped_at__isnull=True).annotate(
            open=Count("connections", filter=Q(connections__closed_at__isnull=True))
        )
        return [(row.name, row.open) for row in rows.order_by("name")]

    @staticmethod
    async def send(channels, *, batch, interval):
        layer = get_channel_layer()
        event = connection_drain_event(reason="server draining")
        for start in range(0, len(channels), batch):
            await asyncio.gather(*(layer.send(channel, event) for channel in channels[start : start + batch]))
            if start + batch < len(channels):
                await asyncio.sleep(interval)
