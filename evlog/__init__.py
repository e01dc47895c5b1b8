"""evlog: a command-line event log kept in a local directory."""

__version__ = "0.1.0"
