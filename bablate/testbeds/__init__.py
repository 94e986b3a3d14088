"""Testbeds: per model family, the sites, data and task families studies build on, with plain arguments (never a study's config type)."""
