"""Helpers every model package uses: layer classes (operations), reading weight files and checking what they hold."""
