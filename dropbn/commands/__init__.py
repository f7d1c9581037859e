"""Thin command modules behind `dropbn <command>` (dropbn/cli.py dispatches to them)."""
