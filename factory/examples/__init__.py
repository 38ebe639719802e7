"""Example training jobs for the factory, built on `factory.train`; they need no downloads."""
