from django import forms

from .models import Role
from .permissions import API_KEY_GRANTABLE


class LoginForm(forms.Form):
    email = forms.EmailField(widget=forms.EmailInput(attrs={"autocomplete": "username", "autofocus": True}))
    password = forms.CharField(widget=forms.PasswordInput(attrs={"autocomplete": "current-password"}))


class MemberAddForm(forms.Form):
    email = forms.EmailField()
    full_name = forms.CharField(max_length=200, required=False)
    role = forms.ChoiceField(choices=Role.choices)
    password = forms.CharField(
        required=False,
        widget=forms.PasswordInput(attrs={"autocomplete": "new-password"}),
        help_text="Initial password for a new account (at least 12 characters). Leave empty for an existing account.",
    )


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
