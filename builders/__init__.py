"""Dataset builders for the LoMo and LiveCC formats. Installed as ``lomo_datasets.builders``."""
