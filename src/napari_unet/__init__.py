"""napari-unet: the U-Net of Ronneberger, Fischer & Brox (2015) as a napari plugin."""

__version__ = "0.1.0"
