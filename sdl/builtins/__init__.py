"""sdl's own instruments and reductions, registered through sdl's entry points
(``[project.entry-points."sdl.instruments"]`` in pyproject.toml) exactly as a third
party registers theirs; the core never imports their code.

The one thing the core takes from here is what runs when nothing is named: the
demo's lab (``sdl demo``, a campaign spec without an instrument, ``sdl serve`` without
a configuration). A deployment names its own instruments instead.
"""

#: the instrument of a campaign spec that names none (``sdl demo``'s)
DEFAULT_INSTRUMENT = "sim-xrd"
#: the instruments ``sdl serve`` offers when its configuration names none
DEFAULT_SERVICE_INSTRUMENTS = ("sim-xrd", "pool:p3ht", "pool:agnp")
