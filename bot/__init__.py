"""The chat side of Likeness: commands, the Studio, the ledger, the platform adapters and the CLI."""
