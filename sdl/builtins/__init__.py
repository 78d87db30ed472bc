"""sdl's own instruments and reductions, registered through sdl's entry points
(``[project.entry-points."sdl.instruments"]`` in pyproject.toml) exactly as a third
party registers theirs; nothing in the core imports this package."""
