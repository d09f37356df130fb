"""Forms of the presence admin: how long to block, and whom."""

from __future__ import annotations

from django import forms

from presence.models import Block

BLOCK_DURATIONS = [(10, "10 minutes"), (60, "1 hour"), (24 * 60, "24 hours"), (7 * 24 * 60, "7 days")]


def duration_label(minutes: int) -> str:
    return dict(BLOCK_DURATIONS).get(minutes, f"{minutes} minutes")


class BlockDurationForm(forms.Form):
    """The second step of "Kick and block for …": how long, and why."""

    minutes = forms.TypedChoiceField(
        label="Block for",
        choices=BLOCK_DURATIONS,
        coerce=int,
        initial=60,
        widget=forms.RadioSelect(attrs={"class": "radiolist"}),
    )
    reason = forms.CharField(
        max_length=200,
        required=False,
        help_text="Recorded with the block and shown to the user when they are disconnected.",
    )


class BlockAddForm(forms.ModelForm):
    """Block one user or one IP address for N minutes; the admin hands it to a service."""

    minutes = forms.IntegerField(
        label="Block for (minutes)",
        min_value=1,
        max_value=366 * 24 * 60,
        initial=60,
        help_text="10 minutes, 60 = 1 hour, 1440 = 24 hours, 10080 = 7 days.",
    )

    class Meta:
        model = Block
        fields = ["user", "ip", "minutes", "reason"]
        labels = {"ip": "IP address"}

    def clean(self):
        cleaned = super().clean()
        if "user" in self.errors or "ip" in self.errors:
            return cleaned
        if bool(cleaned.get("user")) == bool(cleaned.get("ip")):
            raise forms.ValidationError("Fill in either a user or an IP address (one block each).")
        return cleaned
