"""One module per CLI command; each is registered in openmementos.cli."""
