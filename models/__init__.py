"""Estimator artefacts and their build (filled by the estimator issue)."""
