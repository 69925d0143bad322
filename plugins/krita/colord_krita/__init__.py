"""colord for Krita: colour the active line-art layer after a reference layer.

Inside Krita (which imports its `krita` module before loading any plug-in) this registers the action
and the docker; elsewhere (plain Python, tests) importing the package does nothing, so its host-free
modules can be used on their own.
"""

import sys

if "krita" in sys.modules:
    from .extension import register

    register()
