"""`python -m bot` runs the `likeness` command."""

from bot.cli import main

main()
