"""The application's store: SQLAlchemy models, engine and the queries the bot and CLI use."""
