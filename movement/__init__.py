"""movement: measure how a face moves, per muscle group and per side, in millimetres."""

__version__ = "0.1.0"
