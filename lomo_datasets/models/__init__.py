"""Model names, model files (the embedded zoo) and model availability checks."""
