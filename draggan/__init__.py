"""DragGAN: the editing algorithm, its drag methods, sessions and command-line tools. Imports nothing from Gradio.

    from draggan import DragConfig, DragSession
    session = DragSession.from_seed(G, seed=3)
    for frame in session.drag(handles_xy, targets_xy, DragConfig.for_model("toyfaces-64"), method="draggan"):
        ...

`draggan.methods.run_drag(method, DragJob(...))` runs any method without a session.
"""
from .config import DragConfig, DragFrame, DragInputError
from .editor import DragSession
from .methods import METHOD_NAMES, DragJob, run_drag

__all__ = ["METHOD_NAMES", "DragConfig", "DragFrame", "DragInputError", "DragJob", "DragSession", "run_drag"]
