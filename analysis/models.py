"""Model registry, analysis jobs, findings and reviews (built by the model and review issues)."""
