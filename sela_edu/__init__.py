"""sela-edu: a teaching and reproduction kit for SeLa (Asano, Rupprecht and Vedaldi, ICLR 2020)."""

__version__ = "0.1.0"
