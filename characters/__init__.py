"""Per-server characters made from one reference photo, used as `@name` in prompts."""
