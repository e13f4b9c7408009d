"""The review page (lomo-datasets view)."""
