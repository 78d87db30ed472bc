"""Settings from ``SDL_*`` environment variables (pydantic-settings)."""

from __future__ import annotations

from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SDL_", extra="ignore")

    #: Where the record lives: a SQLite file by default, or postgresql://... (see sdl.database).
    store_url: str = f"sqlite:///{Path('sdl-data/sdl.sqlite').resolve()}"
    #: Folder for demo and report output.
    output_dir: Path = Path("sdl-output")


def get_settings() -> Settings:
    return Settings()
