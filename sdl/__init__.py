"""sdl: a self-driving-lab orchestration framework."""

__version__ = "0.1.0"
