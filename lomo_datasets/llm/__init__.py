"""The LLM layer: the LLM stage base, backends, prompts, JSON reply shapes."""
