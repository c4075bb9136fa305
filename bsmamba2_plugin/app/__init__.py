"""The web page (``python -m bsmamba2_plugin.app``, extra ``[app]``): separating uploaded files in a
browser on the package's ``Separator``, with players, downloads, spectrograms and levels."""
