"""Workflows wire stages into Ray Data pipelines / Ray Tune runs and own manifests and summaries."""
