"""The QA audit: row-local checks, dataset figures, audit.md/json."""
