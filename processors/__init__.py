"""Stages: one module per step (ingest, asr, translate, ...). Installed as ``lomo_datasets.processors``."""
