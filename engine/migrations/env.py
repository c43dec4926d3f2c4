"""Alembic environment: the engine is handed in by ``engine.db.upgrade``."""

from alembic import context

from engine.models import Base

config = context.config
target_metadata = Base.metadata


def include_object(obj, name, type_, reflected, compare_to) -> bool:
    """Leave out what engine.indexes derives from the definitions: it is not schema."""
    if type_ == "index" and name and name.startswith("ix_tl_"):
        return False
    return not (type_ == "column" and name and name.startswith("tlf_"))


def run_migrations_online() -> None:
    engine = config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
            include_object=include_object,
        )
        with context.begin_transaction():
            context.run_migrations()
        connection.commit()


run_migrations_online()
