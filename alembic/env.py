"""Alembic environment: migrates the database named by the service's own Settings."""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context

from domain.config import Settings
from domain.db import make_engine
from domain.orm import Base

config = context.config
if config.config_file_name is not None:
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def database_url() -> str:
    # An explicit -x url=... or sqlalchemy.url (as the tests pass) wins over the environment.
    explicit = context.get_x_argument(as_dictionary=True).get("url") or config.get_main_option(
        "sqlalchemy.url"
    )
    if explicit:
        return explicit
    settings = Settings()
    settings.ensure_local_dirs()
    return settings.resolved_database_url()


def run_migrations_offline() -> None:
    context.configure(url=database_url(), target_metadata=target_metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    engine = make_engine(database_url())
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
