"""sdl.agents."""
