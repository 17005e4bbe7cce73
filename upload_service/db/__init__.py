"""Records in SQL: models, the engine/session factory, repository functions and migrations."""
