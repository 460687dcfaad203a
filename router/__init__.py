"""The model catalog and routing: which profile serves a request, and why. Pure; imports nothing of ours."""
