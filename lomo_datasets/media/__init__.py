"""Media with PyAV (probe, audio, frames) and the sample videos."""
