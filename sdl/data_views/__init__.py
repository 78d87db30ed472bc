"""Views of the record where beamline users already look: NeXus/HDF5 files, a Tiled
server, FAIR metadata. The SQL store stays the record; everything here is derived
from its event-model documents and can be rebuilt from them.

- :mod:`sdl.data_views.nexus`: a run or a campaign as a NeXus/HDF5 file.
- :mod:`sdl.data_views.tiled_feed`: every run, written to Tiled through an outbox.
- :mod:`sdl.data_views.tiled_server`: an embedded Tiled server (``sdl serve --tiled``).
"""
