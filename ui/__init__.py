"""The DragGAN web app (Gradio 6), as a package: `build_demo` makes the page, `launch` serves it, `main` is
`python app.py`. Where things are:

    views.py      images as the page shows them (cached_png, ViewImage, InlineFrame, encode_image, clicks)
    controls.py   the drag controls, their defaults and value checks (Control, BoundedSlider)
    wiring.py     handlers bound to the context, UserErrors beside the image or as the API's error, Page
    context.py    AppContext (sessions, settings, how a session is shown), ServerSettings, the device runner
    sections/     one module per part of the page: build(ctx, page) and its named handlers
    build.py      build_demo: the page, and what follows a new image
    launch.py     theme, queue, Gradio version check, main (the command line)

Experiments run in draggan.experiments.runner; the public-mode policy is draggan.public.
"""
from .build import BuiltApp, build_demo
from .launch import main  # the module ui.launch keeps its name: launch() is ui.launch.launch

__all__ = ["BuiltApp", "build_demo", "main"]
