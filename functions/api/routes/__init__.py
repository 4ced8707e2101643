"""One router per resource, gathered by `functions.api.app.create_app`."""
