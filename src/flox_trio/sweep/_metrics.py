"""The window statistics live in the core (a live sweep runs there); the sweeps use them from here."""

from .._core._metrics import WindowStats as WindowStats
from .._core._metrics import measure as measure
