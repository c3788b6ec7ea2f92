"""Estimator artefacts, their build, and router-quality evaluation on held-out routing data."""
