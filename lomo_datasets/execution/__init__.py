"""Running recipes: the local step pools, the Ray executor, the recipes and their steps."""
