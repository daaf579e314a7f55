"""Screens of the TUI: sessions, one session, and the dialogs."""
