"""A colour-matching station as an sdl plug-in: a liquid handler mixes three dyes into a
well, a UV-vis spectrometer measures its transmission; minimise the distance to a target."""
