"""Pure domain core: states, resources, placement, replica planning and status.

Nothing in this package performs I/O, reads a clock or draws random numbers; time and
identifiers arrive as arguments so every decision can be replayed in a unit test.
"""
