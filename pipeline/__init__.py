"""The embedding job: options, model presets, the launch, entry points."""
