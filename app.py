"""The DragGAN web app (Gradio 6): lays out the UI and forwards its events to `draggan.sessions`.

    python app.py [--model SPEC] [--device auto|cpu|cuda|mps] [--host H] [--port P] [--share]
                  [--public | --trusted] [--max-sessions N] [--session-ttl S] [--concurrency N] [--max-photos N]

Each browser tab (and each `gradio_client.Client`) is one session, keyed by Gradio's session
hash: its own latent, points and mask over a generator shared by everyone. Drags, inversions
and experiments wait for one of `--concurrency` device slots in our own code (so a Stop reaches
a drag that still waits); Generate does not wait behind them.

Public mode (the default whenever the app listens beyond loopback or makes a share link, or
with --public / DRAGGAN_PUBLIC=1): only catalog models, no local paths, no arbitrary Hub files,
embeddings only for catalog models, bounded experiments. --trusted (DRAGGAN_TRUSTED=1) allows
custom models. See the README's "Running it in public".

The app itself is the `ui` package (see ui/__init__.py for where things are); this file is the entry
point that Hugging Face Spaces and `python app.py` run.

The API (see the app's "Use via API" page); parameters with their defaults:
  /generate(model, seed=0, psi=0.7, latent_space="w+") -> view, status, hint
  /drag(handles="", targets="", lr, r1, r2, r3, nearest, max_steps, lambda_mask, feature_block, rows,
        frame_every, tracking, method="draggan", frame_rate=15) -> streams (view, progress line, frame JSON);
        the views before the last come inline, {"url": "data:image/jpeg;base64,..."}; the last is a file.
        The settings, their bounds and checks are DragConfig's SETTINGS (None: the model's default); the
        method is any registered one the model can run (draggan.methods)
  /stop, /undo, /reset, /save_image -> PNG, /export_video(video_format="mp4", overlay=True) -> file
  /drag_defaults -> lr, r1, r2, r3, feature_block, max_steps suited to the session's model
  /invert(photo, crop="", preset="fast", model=<default>, latent_space="w+") -> view, status, hint, report
  /cancel_invert; /save_embedding -> .safetensors; /load_embedding(file, latent_space="w+") -> as /invert
  /experiment(protocol="landmarks", pairs=4, max_steps=200, points=1, feature_block=0, methods="draggan")
      -> streams (progress line, results table, JSON file); /stop_experiment
Points are (x, y) image pixels everywhere; the view is the image enlarged by a whole number, and
`ui.views.view_to_image_xy` is the one place clicks are converted. In the UI, bad input leaves the image
and points as they were and says why beside them; API calls get the same message as an error.
"""
from ui.build import BuiltApp, build_demo
from ui.launch import launch, main

__all__ = ["BuiltApp", "build_demo", "launch", "main"]

if __name__ == "__main__":
    main()
