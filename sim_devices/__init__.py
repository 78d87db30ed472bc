"""sdl.sim_devices."""
