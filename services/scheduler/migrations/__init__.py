"""Alembic migrations of the scheduler's database, run through services.scheduler._migrate.

Every schema change ships as a revision in versions/ (docs/development.md says how).
"""
