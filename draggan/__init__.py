"""DragGAN: the editing algorithm, sessions and command-line tools. Imports nothing from Gradio."""
