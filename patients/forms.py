from django import forms

from .models import Sex


class PatientForm(forms.Form):
    external_id = forms.CharField(max_length=64, label="Practice id")
    given_name = forms.CharField(max_length=100)
    family_name = forms.CharField(max_length=100)
    date_of_birth = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    sex = forms.ChoiceField(choices=Sex.choices, initial=Sex.UNKNOWN)
