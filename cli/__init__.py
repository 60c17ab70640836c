"""The `l2sweep` command (typer): parses, calls l2reg, sets the exit code. Nothing else."""
