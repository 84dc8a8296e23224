"""Imports every model family so that their presets register (see registry._load_all)."""
