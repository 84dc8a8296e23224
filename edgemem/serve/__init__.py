"""Serving: drive runtime sessions over video sources (streaming loop, annotation, live view)."""
