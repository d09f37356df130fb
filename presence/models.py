# Presence is kept in Redis for now (presence/store.py); the connection registry,
# moderation records and abuse flags land here with the presence issue.
