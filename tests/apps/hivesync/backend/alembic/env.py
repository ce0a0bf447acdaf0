import os
from logging.config import fileConfig

from sqlalchemy import engine_from_config, pool

from alembic import context

config = context.config
e = os.environ
config.set_main_option(
    "sqlalchemy.url",
    f"postgresql+psycopg2://{e['POSTGRES_USER']}:{e['POSTGRES_PASSWORD']}@{e['POSTGRES_HOST']}:"
    f"{e.get('POSTGRES_PORT', '5432')}/{e['POSTGRES_DB']}".replace("%", "%%"),
)
if config.config_file_name is not None:
    fileConfig(config.config_file_name)

connectable = engine_from_config(config.get_section(config.config_ini_section, {}), prefix="sqlalchemy.",
                                 poolclass=pool.NullPool)
with connectable.connect() as connection:
    context.configure(connection=connection, target_metadata=None)
    with context.begin_transaction():
        context.run_migrations()
