"""The `l2sweep` command (typer): parses, calls l2reg, sets the exit code. Nothing else.

Installed as `l2reg.cli` (pyproject.toml maps the repository's cli/ there, and conf/ to `l2reg.conf`),
so nothing named `cli` lands in site-packages: `l2sweep ...` or `python -m l2reg.cli.main ...`. In a
bare source tree with no install, `python -m cli.main ...` from the repository root runs the same code.
"""
