"""sdl.plans."""
