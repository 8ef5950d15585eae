"""Built-in plugins. Each module here is listed under the `rlhfx` entry-point group in
pyproject.toml and loads exactly as a third-party plugin package would."""
