"""The Discord adapter: the only package that imports discord.py. It translates; the Studio decides."""
