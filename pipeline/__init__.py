"""The embedding job: options, model presets, graph construction, entry points."""
