from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.shortcuts import render


@login_required
def chat(request):
    """The chat client: one page, one socket, every room and conversation."""
    return render(request, "rooms/chat.html", {"heartbeat": settings.CHAT_HEARTBEAT})
