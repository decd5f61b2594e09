"""pytest plugin for stabilitykit (filled in by the plugin work)."""
