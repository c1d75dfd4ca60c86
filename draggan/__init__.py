"""DragGAN: the editing algorithm, its drag methods, sessions and command-line tools. Imports nothing from Gradio.

    from draggan import DragConfig, Editor          # DragSession: the same class, its older name
    editor = Editor.from_seed(G, seed=3)
    for frame in editor.drag(handles_xy, targets_xy, DragConfig.for_model("toyfaces-64"), method="draggan"):
        ...

`draggan.methods.run_drag(method, DragJob(...))` runs any method without a session.
"""
from .config import SETTINGS, DragConfig, DragFrame, DragInputError, DragJob, Setting
from .editor import DragSession, Editor
from .methods import METHODS, MethodSpec, register_method, run_drag

__all__ = ["METHODS", "SETTINGS", "DragConfig", "DragFrame", "DragInputError", "DragJob", "DragSession", "Editor",
           "MethodSpec", "Setting", "register_method", "run_drag"]


def __getattr__(name: str):
    if name == "METHOD_NAMES":  # version 2's name: the registered methods, when asked
        from .methods import METHODS
        return tuple(METHODS)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
