"""Serving registered models behind Ray Serve endpoints: predictors, endpoint state, request stats."""
