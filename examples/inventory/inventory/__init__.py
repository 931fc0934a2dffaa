"""A small inventory package: stock levels and order pricing."""
