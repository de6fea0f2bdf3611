"""Numerical core of napari-unet: model, weight maps, training and tiled prediction.

Nothing under ``napari_unet.core`` imports napari or Qt, so the same code serves
the dock widgets, the command line and headless scripts.
"""
