"""midilib: generative modelling of piano music in MIDI, as a research workbook."""

__version__ = "0.1.0"
