"""Output folders, the Hub layout, dataset cards, the Hub client."""
