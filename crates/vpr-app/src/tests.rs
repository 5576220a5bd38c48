//! In-process service tests, on SQLite and PostgreSQL.
