"""cola-ray: calibration-data curation for LLM compression (COLA), as a distributed Ray pipeline."""

__version__ = "0.1.0"
