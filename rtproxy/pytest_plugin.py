"""pytest fixtures that replay recordings (filled in by the replay issue)."""
