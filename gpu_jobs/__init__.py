"""Everything that runs on Modal (GPU containers): the app in app.py, its job logic in
engine.py (plain Python, shared with the local GPU executor)."""
