"""openmementos: build, check, publish and consume MEMENTO training data."""

__version__ = "0.1.0"
