"""The bottom layer: plain-Python vocabularies and helpers every app may use (no app imports here)."""
