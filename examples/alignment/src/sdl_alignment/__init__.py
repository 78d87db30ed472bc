"""Beamline alignment as an sdl plug-in: a focusing mirror (pitch, bend) and an area
detector; objectives: maximise the beam intensity, minimise the beam size."""
