"""Demo data: seeds demo clinics, people and sample visits (the top layer: it uses every app)."""
