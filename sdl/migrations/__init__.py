"""alembic migrations of every sdl table (the record and the service), one history.

Run by :func:`sdl.database.ensure_schema` whenever a store is opened, and by
``sdl db upgrade``. See README in this folder for adding a revision.
"""
