"""Widgets of the TUI: each renders data handed to it; none reads the store."""
