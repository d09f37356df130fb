"""A minimal tutorial-style Channels project: the baseline every figure is compared with.

Written the way the Channels tutorial writes a chat (an AsyncWebsocketConsumer, the
core RedisChannelLayer, group_send of a dict that each receiver encodes), and speaking
just enough of PROTOCOL.md that the same load generator drives it and the real server:
`welcome` on connect, `join` -> `joined` (plus, with `since`, the missed messages from a
per-process in-memory list), `chat` -> a `chat` broadcast with an id, `ping` -> `pong`,
`leave` -> `left`. No authentication (any socket is accepted; the bearer token is
ignored), no database, no presence, no rate limit.
"""
