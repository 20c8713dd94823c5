from django import forms

from .models import Role
from .permissions import API_KEY_GRANTABLE


class LoginForm(forms.Form):
    email = forms.EmailField(widget=forms.EmailInput(attrs={"autocomplete": "username", "autofocus": True}))
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))


class InvitationForm(forms.Form):
    email = forms.EmailField(help_text="The person gets a link to accept; they choose their own name and password.")
    role = forms.ChoiceField(choices=Role.choices)


class InvitationAcceptForm(forms.Form):
    display_name = forms.CharField(
        label="Your name as this clinic sees it", max_length=200, required=False, help_text="Shown to this clinic only."
    )


class InvitationNewAccountForm(forms.Form):
    full_name = forms.CharField(label="Your name", max_length=200, required=False)
    password1 = forms.CharField(
        label="Password",
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="At least 12 characters.",
    )
    password2 = forms.CharField(
        label="Password again", widget=forms.PasswordInput(attrs={"autocomplete": "new-password"})
    )

    def clean(self) -> dict[str, object]:
        data = super().clean()
        if data.get("password1") and data.get("password1") != data.get("password2"):
            self.add_error("password2", "The two passwords differ.")
        return data


class MemberUpdateForm(forms.Form):
    role = forms.ChoiceField(choices=Role.choices, required=False)
    is_active = forms.TypedChoiceField(
        choices=[("1", "active"), ("0", "inactive")], coerce=lambda v: v == "1", required=False, empty_value=None
    )


class ApiKeyForm(forms.Form):
    name = forms.CharField(max_length=100)
    scopes = forms.MultipleChoiceField(
        choices=[(s, s) for s in sorted(API_KEY_GRANTABLE)],
        widget=forms.CheckboxSelectMultiple,
        initial=sorted(API_KEY_GRANTABLE),
    )
    expires_in_days = forms.TypedChoiceField(
        label="Expires",
        choices=[("", "never (until revoked)"), (30, "in 30 days"), (90, "in 90 days"), (365, "in a year")],
        coerce=int,
        empty_value=None,
        required=False,
        initial=365,
    )


class AuditFilterForm(forms.Form):
    since = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    until = forms.DateTimeField(required=False, widget=forms.DateTimeInput(attrs={"type": "datetime-local"}))
    action = forms.CharField(required=False, max_length=64)
    actor = forms.CharField(required=False, max_length=254)
