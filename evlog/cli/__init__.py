"""The command line: the root command and its exit codes, one module per command group, rendering,
progress and diagnostics. The only package that knows typer and rich.
"""
