"""sdl.devices."""
