"""Writes for presence: the connection registry, moderation, abuse flags, service keys.

A package because it outgrew one module; import from the submodules:
``presence.services.connections``, ``.moderation``, ``.keys``, ``.push``.
"""
