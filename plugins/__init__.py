"""Plug-ins for the painting apps, shipped as data: `colord plugin install|pack` copies them out."""
