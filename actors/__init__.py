"""The factory's Ray actor classes.

They are plain classes; `actors.spawn` makes them named, detached, restartable Ray actors in
namespace `factory` (`factory.bootstrap` at `factory up`). They reach each other by name through
`factory.control_plane`, never through the SDK.
"""
