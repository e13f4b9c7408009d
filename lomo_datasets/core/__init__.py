"""The stage contract, record features, settings and their bounds, errors, progress, secrets."""
