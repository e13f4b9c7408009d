"""Dataset card templates (Markdown with a YAML header), shipped as package data."""
