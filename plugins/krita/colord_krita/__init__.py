"""colord for Krita: colour the active line-art layer after a reference layer.

Inside Krita this registers the action and the docker; elsewhere (plain Python, tests) importing the
package does nothing, so its host-free modules can be used on their own.
"""

from importlib.util import find_spec

if find_spec("krita") is not None:
    from .extension import register

    register()
