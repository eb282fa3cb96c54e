"""image-input: the public API. Validates uploads and orchestrates the other services."""
