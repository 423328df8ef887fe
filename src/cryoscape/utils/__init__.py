"""Small helpers shared by every layer (progress display)."""
