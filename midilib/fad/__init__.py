"""Fréchet Audio Distance for rendered MIDI: offline embedders (musicnn, basic-pitch, VGGish).

Weights come from PyPI wheels at set-up (`python -m midilib.fad.weights`);
TensorFlow is never needed.
"""

from midilib.fad.embedders import EMBEDDERS, embed_windows, fad, get_embedder, window_vectors

__all__ = ["EMBEDDERS", "embed_windows", "fad", "get_embedder", "window_vectors"]
