"""The factory's Ray actor classes.

They are plain classes; `factory.control_plane` makes them named, detached, restartable Ray actors
in namespace `factory`.
"""
