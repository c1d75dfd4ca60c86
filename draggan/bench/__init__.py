"""Benchmark helpers behind `python -m draggan bench`: measuring (`measure`), the official code's own drag step
(`official`, driving a DragGAN checkout the user has) and where a step's time goes (`profile`)."""
