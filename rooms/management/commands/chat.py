"""`manage.py chat`: a terminal client of the chat socket, interactive or scripted.

Interactive (the default): lines starting with `/` are commands (/help lists them), any
other line is a message to the current room; incoming frames print as readable lines.
Scripted: --send, --rooms or --history do their one thing, print the result and exit
0 (1 on a server error, 2 when the connection is refused or fails).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import unicodedata
from datetime import datetime

from django.core.management.base import BaseCommand, CommandError

from rooms.client import ChatClient, ChatClientError, ClientStopped, ConnectFailed, HandshakeRefused, ServerError
from rooms.events import ClientFrame, ServerFrame
from rooms.policies import room_slug_valid

DEFAULT_URL = "ws://127.0.0.1:8000/ws/chat/"
DRAIN_SECONDS = 5.0  # on /quit or EOF, how long to wait for the echo of messages in flight

COMMANDS = """\
/join ROOM                  join ROOM and make it the current room
/leave [ROOM]               leave ROOM (default: the current room)
/switch ROOM                make a joined room the current one
/rooms                      the rooms you may join, with how many are online
/who                        who is online in the current room
/history [ROOM] [BEFORE]    a page of a room's messages (older than id BEFORE)
/history @USER [BEFORE]     a page of your private messages with USER
/msg USER TEXT              a private message
/reconnect                  connect again after being kicked or blocked
/quit                       leave (also Ctrl-D or Ctrl-C)
/help                       this list
TEXT                        a message to the current room (//TEXT sends /TEXT)"""


# --- rendering frames as lines -------------------------------------------------------


def clean(text: object) -> str:
    """Text from other users without control characters (no terminal escape sequences);
    a multi-line body continues on indented lines."""
    chars = (c if c == "\n" or unicodedata.category(c)[0] != "C" else "?" for c in str(text))
    return "".join(chars).replace("\n", "\n    ")


def clock(created_at: str | None) -> str:
    """HH:MM in local time of an ISO 8601 UTC timestamp."""
    try:
        return datetime.fromisoformat(created_at).astimezone().strftime("%H:%M")
    except (TypeError, ValueError):
        return "--:--"


def message_line(frame: dict, me: str | None) -> str:
    """[general] 10:33 alice: hello, or [@bob] 10:33 alice: hi for a private message."""
    if frame.get("type") == ServerFrame.PRIVATE:
        where = "@" + clean(frame.get("to") if frame.get("sender") == me else frame.get("sender"))
    else:
        where = clean(frame.get("room"))
    return f"[{where}] {clock(frame.get('created_at'))} {clean(frame.get('sender'))}: {clean(frame.get('body'))}"


def history_lines(frame: dict, me: str | None) -> list[str]:
    where = frame["room"] if "room" in frame else "@" + str(frame.get("with"))
    messages = frame.get("messages") or []
    lines = [message_line(m, me) for m in messages] or [f"* no messages in {clean(where)}"]
    if frame.get("has_more") and messages:
        lines.append(f"* older: /history {clean(where)} {messages[0]['id']}")
    return lines


def rooms_lines(rooms: list[dict]) -> list[str]:
    if not rooms:
        return ["* no rooms yet: /join ROOM creates one"]
    width = max(len(r["room"]) for r in rooms)
    return [f"{clean(r['room']):<{width}}  {r.get('online', 0):>3} online  {clean(r.get('title', ''))}" for r in rooms]


def render(frame: dict, me: str | None) -> list[str]:
    """The lines an incoming frame prints as (replies to /history and /rooms print where
    they are awaited, so they render as nothing here)."""
    kind = frame.get("type")
    if kind in (ServerFrame.CHAT, ServerFrame.PRIVATE):
        return [message_line(frame, me)]
    if kind == ServerFrame.JOINED:
        online = sorted(frame.get("online") or [])
        line = f"* joined {clean(frame.get('room'))}: {len(online)} online ({clean(', '.join(online))})"
        return [line + (", catching up on missed messages" if frame.get("more") else "")]
    if kind == ServerFrame.LEFT:
        return [f"* left {clean(frame.get('room'))}"]
    if kind == ServerFrame.PRESENCE:
        if frame.get("user") == me:
            return []  # "* joined ROOM" said it already
        verb = "joined" if frame.get("event") == "join" else "left"
        return [f"* {clean(frame.get('user'))} {verb} {clean(frame.get('room'))}"]
    if kind == ServerFrame.TYPING:
        return [f"* {clean(frame.get('user'))} is typing in {clean(frame.get('room'))}"]
    if kind == ServerFrame.ERROR:
        # A ref naming a request type helps; a message's client_id means nothing to a person.
        ref = f" (re {frame['ref']})" if frame.get("ref") in set(ClientFrame) else ""
        return [f"! error {clean(frame.get('code'))}: {clean(frame.get('message'))}{ref}"]
    if kind == ServerFrame.KICKED:
        return [f"! kicked: {clean(frame.get('reason'))}"]
    if kind == ServerFrame.NOTIFY:
        return [f"! notify {clean(frame.get('topic'))}: {clean(json.dumps(frame.get('data'), ensure_ascii=False))}"]
    if kind == ServerFrame.JOB:
        progress = frame.get("progress")
        share = f" {progress:.0%}" if isinstance(progress, int | float) else ""
        detail = f" {clean(frame['detail'])}" if frame.get("detail") else ""
        return [f"* job {clean(frame.get('job_id'))}: {clean(frame.get('status'))}{share}{detail}"]
    if kind in (ServerFrame.PONG, ServerFrame.HISTORY, ServerFrame.ROOMS):
        return []
    return [f"* {clean(json.dumps(frame, ensure_ascii=False))}"]


def stdin_lines(loop: asyncio.AbstractEventLoop) -> asyncio.Queue:
    """Lines of stdin on a queue, None at EOF. A daemon thread reads, so the event loop
    never blocks and exiting never waits for a line that will not come (a tty is not put
    in non-blocking mode, which would break writes to the same terminal)."""
    queue: asyncio.Queue = asyncio.Queue()

    def put(item: str | None) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed while the thread read
            loop.call_soon_threadsafe(queue.put_nowait, item)

    def pump() -> None:
        try:
            while line := sys.stdin.readline():
                put(line)
        except (OSError, ValueError):
            pass
        put(None)

    threading.Thread(target=pump, name="chat-stdin", daemon=True).start()
    return queue


# --- the interactive session ---------------------------------------------------------


class Session:
    """One interactive session: turns input lines into client calls, frames into lines."""

    def __init__(self, command: Command, url: str):
        self.command, self.url = command, url
        self.current: str | None = None
        self.client: ChatClient | None = None

    def say(self, *lines: str) -> None:
        for line in lines:
            self.command.stdout.write(line)
        self.command.stdout.flush()

    def on_frame(self, frame: dict) -> None:
        self.say(*render(frame, self.client.user))

    def on_state(self, state: str, detail: dict) -> None:
        if state == "connected":
            again = "re" if detail.get("reconnects") else ""
            self.say(f"* {again}connected to {self.url} as {detail.get('user')} (/help lists the commands)")
        elif state == "disconnected":
            if detail.get("attempt"):
                self.say(f"~ still unreachable; next try in {detail['delay']:.1f} s")
            else:
                code = f"code {detail['code']}: " if detail.get("code") else ""
                self.say(f"~ disconnected ({code}{detail.get('reason')}); reconnecting in {detail['delay']:.1f} s")
        elif state == "stopped":
            self.say(f"! disconnected: {detail.get('reason')}; /reconnect to try again, /quit to leave")

    async def handle(self, line: str) -> bool:
        """Act on one input line; False to quit."""
        line = line.strip()
        if not line:
            return True
        if line.startswith("//") or not line.startswith("/"):
            await self.send(line[1:] if line.startswith("//") else line)
            return True
        name, _, rest = line[1:].partition(" ")
        args = rest.split()
        try:
            return await self.run(name.lower(), args, rest.strip())
        except ServerError:
            pass  # already printed as it arrived
        except TimeoutError:
            self.say("! no answer from the server in time")
        except ClientStopped as exc:
            self.say(f"! not connected: {exc.reason}; /reconnect to try again")
        except ChatClientError as exc:
            self.say(f"! {exc}")
        return True

    async def run(self, name: str, args: list[str], rest: str) -> bool:
        client = self.client
        if name in ("quit", "exit", "q"):
            return False
        if name == "help":
            self.say(COMMANDS)
        elif name == "join" and len(args) == 1:
            if not room_slug_valid(slug=args[0]):
                self.say("! a room name is lowercase letters, digits, '-' and '_' (up to 64)")
            else:
                await client.join(args[0])
                self.current = args[0]
        elif name == "leave" and len(args) <= 1 and (args or self.current):
            room = args[0] if args else self.current
            await client.leave(room)
            if self.current == room:
                self.current = next(iter(client.joined), None)
                self.say(f"* current room: {self.current or 'none'}")
        elif name == "switch" and len(args) == 1:
            if args[0] in client.joined:
                self.current = args[0]
                self.say(f"* current room: {self.current}")
            else:
                self.say(f"! not in {clean(args[0])}: /join {clean(args[0])}")
        elif name == "rooms" and not args:
            self.say(*rooms_lines(await client.rooms()))
        elif name == "who" and not args:
            if self.current is None:
                self.say("! no current room: /join ROOM")
            else:
                online = sorted(client.online.get(self.current, ()))
                self.say(f"* online in {self.current}: {clean(', '.join(online)) or 'nobody'}")
        elif name == "history" and len(args) <= 2:
            await self.history(args)
        elif name == "msg" and len(args) >= 2:
            await client.private(args[0], rest.partition(" ")[2].strip())
        elif name == "reconnect" and not args:
            await client.connect()
        else:
            self.say(f"! unknown command or wrong arguments: /{name}; /help lists the commands")
        return True

    async def history(self, args: list[str]) -> None:
        before = int(args.pop()) if args and args[-1].isdigit() else None
        target = args[0] if args else self.current
        if target is None or args[1:]:
            self.say("! usage: /history [ROOM|@USER] [BEFORE_ID]")
            return
        if target.startswith("@"):
            frame = await self.client.history(with_=target[1:], before=before)
        else:
            frame = await self.client.history(room=target, before=before)
        self.say(*history_lines(frame, self.client.user))

    async def send(self, text: str) -> None:
        if self.current is None:
            self.say("! no current room: /join ROOM first (or /msg USER TEXT)")
        else:
            await self.client.chat(self.current, text)

    async def drain(self) -> None:
        """Wait (a little) for the echo of messages still in flight, so a piped script's
        last line is delivered before the socket closes."""
        with contextlib.suppress(TimeoutError, ChatClientError):
            async with asyncio.timeout(DRAIN_SECONDS):
                for client_id in list(self.client.outbox):
                    with contextlib.suppress(ServerError):
                        await self.client.wait_ack(client_id)


class Command(BaseCommand):
    help = (
        "A terminal client of the chat socket. Interactive by default: /help lists the commands, any other "
        "line is a message to the current room. With --send, --rooms or --history it does that, prints the "
        "result and exits (0; 1 on a server error; 2 if it cannot connect). The token may come from the "
        "environment variable CHAT_TOKEN instead of --token, so that it does not show in `ps`."
    )
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument(
            "--url",
            default=os.environ.get("CHAT_URL", DEFAULT_URL),
            help=f"the chat socket (default: $CHAT_URL or {DEFAULT_URL})",
        )
        parser.add_argument(
            "--token",
            default=None,
            help="API token (create_token makes one); default: the CHAT_TOKEN environment variable, "
            "which keeps it out of `ps`",
        )
        parser.add_argument(
            "--join",
            action="append",
            default=[],
            metavar="ROOM",
            help="join ROOM first (repeatable); interactive mode starts in the first one",
        )
        parser.add_argument("--send", metavar="TEXT", help="send TEXT to the first --join room, print its echo, exit")
        parser.add_argument("--to", metavar="USER", help="with --send: a private message to USER instead")
        parser.add_argument("--rooms", action="store_true", help="print the rooms you may join and exit")
        parser.add_argument(
            "--history", metavar="ROOM", help="print the last page of ROOM (or @USER: your private messages) and exit"
        )
        parser.add_argument("--before", type=int, metavar="ID", help="with --history: messages older than ID")
        parser.add_argument("--limit", type=int, default=50, help="with --history: page size, 1 to 100 (default 50)")
        parser.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for each answer (default 10)")

    def handle(self, *args, **options):
        token = options["token"] or os.environ.get("CHAT_TOKEN")
        if not token:
            raise CommandError("no token: pass --token TOKEN or set CHAT_TOKEN", returncode=2)
        scripted = options["send"] is not None or options["rooms"] or options["history"]
        if options["send"] is not None and not (options["join"] or options["to"]):
            raise CommandError("--send needs --join ROOM (or --to USER for a private message)", returncode=2)
        for room in options["join"]:
            if not room_slug_valid(slug=room):
                raise CommandError(f"not a room name: {room!r}", returncode=2)
        client = ChatClient(options["url"], token, request_timeout=options["timeout"], open_timeout=options["timeout"])
        try:
            asyncio.run(self.script(client, options) if scripted else self.interactive(client, options))
        except KeyboardInterrupt:
            self.stdout.write("")
        except (HandshakeRefused, ConnectFailed) as exc:
            raise CommandError(str(exc), returncode=2) from None
        except ServerError as exc:
            raise CommandError(f"error {exc.code}: {exc.message}") from None
        except ClientStopped as exc:
            raise CommandError(f"disconnected: {exc.reason}") from None
        except TimeoutError:
            raise CommandError(f"no answer from the server within {options['timeout']} s") from None

    async def script(self, client: ChatClient, options: dict) -> None:
        async with client:
            for room in options["join"]:
                await client.join(room)
            if options["send"] is not None:
                if options["to"]:
                    client_id = await client.private(options["to"], options["send"])
                else:
                    client_id = await client.chat(options["join"][0], options["send"])
                self.stdout.write(message_line(await client.wait_ack(client_id), client.user))
            if options["rooms"]:
                self.stdout.write("\n".join(rooms_lines(await client.rooms())))
            if options["history"]:
                target = options["history"]
                where = {"with_": target[1:]} if target.startswith("@") else {"room": target}
                frame = await client.history(**where, before=options["before"], limit=options["limit"])
                self.stdout.write("\n".join(history_lines(frame, client.user)))

    async def interactive(self, client: ChatClient, options: dict) -> None:
        session = Session(self, options["url"])
        session.client = client
        client.on_frame, client.on_state = session.on_frame, session.on_state
        await client.connect()
        try:
            for room in options["join"]:
                await session.handle(f"/join {room}")
            lines = stdin_lines(asyncio.get_running_loop())
            while (line := await lines.get()) is not None and await session.handle(line):
                pass
            await session.drain()
        finally:
            await client.close()
