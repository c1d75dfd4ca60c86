"""The Experiment tab (the Qt reproduction's panel): a single-pair test on the current image and multi-pair
runs of the landmark protocol. The work itself is draggan.experiments.runner's."""
from __future__ import annotations

import math
from typing import Any, Iterator

import gradio as gr
import numpy as np

from draggan.config import DragInputError
from draggan.draw import draw_points
from draggan.experiments.detectors import DETECTORS, get_detector
from draggan.experiments.runner import (ExperimentPlan, ExperimentRuns, Finished, SinglePairResult, Stopped, Tick,
                                        check_detector, check_plan, detectors_for, landmark_experiment,
                                        single_pair)
from draggan.methods import METHODS
from draggan.public import experiment_budget_s, max_experiment_pairs
from draggan.sessions import check_seed

from ..context import AppContext
from ..controls import check_whole, drag_config
from ..views import ViewImage, view_scale
from ..wiring import Page, bind, keep_on_error, skips
from .drag import frame_text

EXPERIMENT_COLUMNS = ["method", "MD before", "MD after", "success", "steps", "s/edit"]  # the results table
ROUNDING = (("md_before", 2), ("md_after", 2), ("success_rate", 2), ("steps", 1), ("seconds_per_edit", 3))
LANDMARKS = (1, 5, 68)


def single_test(ctx: AppContext, seed: float, n_points: int, detector_name: str, request: gr.Request):
    """The single-pair test: the current image's landmarks dragged to another seed's; streams the drag, then
    where the landmarks landed (red) and where they should be (blue)."""
    target = check_seed(seed)
    if n_points not in LANDMARKS:
        raise DragInputError(f"Landmarks must be one of {', '.join(map(str, LANDMARKS))}, got {str(n_points)[:20]!r}")
    if not isinstance(detector_name, str) or detector_name not in DETECTORS:
        raise DragInputError(f"Detector must be one of {', '.join(DETECTORS)}, got {str(detector_name)[:20]!r}")
    detector = get_detector(detector_name)
    check_landmarks(detector, int(n_points))
    sess = ctx.session(request)
    check_detector(sess.model, detector_name)
    cfg, _ = drag_config(sess.model, {})
    for item in single_pair(sess, detector, target, int(n_points), cfg):
        if isinstance(item, SinglePairResult):
            landed = item.found[np.isfinite(item.found).all(1)].tolist()
            yield (draw_points(sess.image(), landed, item.goal.tolist(), scale=view_scale(sess.resolution)),
                   f"Mean distance **{item.md_before:.2f} → {item.md_after:.2f} px** after {item.last.step} steps "
                   f"({item.last.reason}).")
        else:
            yield ctx.view(sess, item), frame_text(item, [])


def check_landmarks(detector: Any, n_points: int) -> None:
    """The detector finds that many landmarks, or one line in the page's words."""
    if n_points not in detector.points_available:
        found = " or ".join(map(str, sorted(detector.points_available)))
        name = "toy-faces" if detector.name == "toy" else detector.name
        raise DragInputError(f"The {name} detector finds {found} landmarks, not {n_points}: choose {found} under "
                             "Landmarks" + (", or the dlib detector for 68" if detector.name == "toy" else ""))


def rounded(value: Any, digits: int) -> Any:
    return round(float(value), digits) if isinstance(value, (int, float)) and math.isfinite(value) else value


def results_table(result: Any):
    """The results as a person reads them (the files keep every digit)."""
    import pandas as pd

    rows = [[name, *(rounded(s.get(k), digits) for k, digits in ROUNDING)] for name, s in result.methods.items()]
    return pd.DataFrame(rows, columns=EXPERIMENT_COLUMNS)


def experiment_lines(events: Iterator[Tick | Stopped | Finished]) -> Iterator[tuple]:
    """The runner's events as the tab's outputs: progress line, table, files, plot."""
    for event in events:
        if isinstance(event, Tick):
            yield f"Running: {event.done} of {event.total} edits · {event.seconds:.0f} s", *skips(3)
        elif isinstance(event, Stopped):
            why = ": an experiment's time on this server ran out" if event.reason == "budget" else ""
            line = f"Stopped after {event.done} of {event.total} edits{why}."
            if event.result is not None and event.result.methods:  # the rows of the edits that finished
                yield f"{line} The table shows those.", results_table(event.result), *skips(2)
            else:
                yield line, *skips(3)
        elif isinstance(event, Finished):
            note = f" {event.note}" if event.note else ""
            yield (f"Done: {event.total} edits in {event.seconds:.0f} s.{note}", results_table(event.result),
                   [str(f) for f in event.files], str(event.plot) if event.plot else None)


def method_names(methods: Any) -> list[str]:
    if isinstance(methods, str):
        return [m.strip() for m in methods.split(",")]
    if not isinstance(methods, (list, tuple)):
        raise DragInputError(f"methods: one or more of {', '.join(METHODS)}")
    return [m.strip() if isinstance(m, str) else m for m in methods]


def run(ctx: AppContext, runs: ExperimentRuns, protocol: str, pairs: float, max_steps: float, points: int,
        feature_block: int, methods, request: gr.Request):
    """Run an experiment on the session's model: protocol 'landmarks' (toy-faces detector); pairs, max steps
    per pair, points (1 or 5), feature_block (0: the model's), methods (a list or 'a,b'). Streams a
    progress line, the results table, the JSON/CSV files and the decay plot."""
    if protocol != "landmarks":
        raise DragInputError("the app runs the 'landmarks' protocol; the others: `python -m draggan experiment`")
    sess = ctx.session(request)
    check_detector(sess.model, "toy")
    plan = ExperimentPlan(method_names(methods), check_whole(pairs, "pairs"), check_whole(max_steps, "max_steps"),
                          check_whole(points, "points"), check_whole(feature_block, "feature_block", 0, 18) or None,
                          budget_s=experiment_budget_s(ctx.settings.public))
    check_landmarks(get_detector("toy"), plan.points)  # the multi-pair test measures with the toy detector
    check_plan(plan, max_experiment_pairs(ctx.settings.public), sess.editor.auto is not None)
    key = request.session_hash
    with runs.start(key, sess.line) as ticket:
        yield from experiment_lines(landmark_experiment(sess, plan, ticket, lambda: key not in ctx.sessions))


DETECTOR_CHOICES = [("Toy faces (exact)", "toy"), ("dlib (real faces)", "dlib")]
NO_FIT = "No landmark detector fits this model: the landmark tests run on toy faces (toy) and human faces (dlib)."


def offer(ctx: AppContext, request: gr.Request):
    """After a new image: the detectors that fit its model, the buttons only where one does, and a line why."""
    if not ctx.has_session(request):
        return skips(4)
    fitting = detectors_for(ctx.session(request).model)
    choices = [c for c in DETECTOR_CHOICES if c[1] in fitting]
    note = "" if "toy" in fitting else ("The multi-pair test runs the toy-faces detector, which does not fit this "
                                        "model." if fitting else NO_FIT)
    return (gr.Radio(choices=choices, value=fitting[0] if fitting else None), gr.Button(interactive=bool(fitting)),
            gr.Button(interactive="toy" in fitting), note)


def stop_experiment(runs: ExperimentRuns, request: gr.Request) -> None:
    runs.stop(request.session_hash)


def build(ctx: AppContext, page: Page, runs: ExperimentRuns) -> None:
    max_pairs = max_experiment_pairs(ctx.settings.public)
    with gr.Row():
        with gr.Column():
            gr.Markdown("**Single pair**: the current image's landmarks go to another seed's landmarks.")
            target_seed = gr.Number(1, label="Target seed")
            with gr.Row():
                points = gr.Radio(list(LANDMARKS), value=5, label="Landmarks", info="68 needs the dlib detector")
                detector = gr.Radio(DETECTOR_CHOICES, value="toy", label="Detector")
            test_btn = gr.Button("Test", variant="primary", elem_id="exp_test")
            single_view = ViewImage(type="numpy", interactive=False, label="Landed (red) · goal (blue)",
                                    buttons=["download"])
            single_text = gr.Markdown("")
        with gr.Column():
            gr.Markdown(f"**Multi-pair test** on this model (at most {max_pairs} pairs here).")
            pairs = gr.Slider(1, max_pairs, value=min(4, max_pairs), step=1, label="Pairs")
            max_steps = gr.Slider(10, 1000, value=200, step=10, label="Max steps per pair")
            block = gr.Radio([("Model's", 0), 4, 5, 6, 7], value=0, label="Latent block (features)")
            methods = gr.CheckboxGroup([(s.label, m) for m, s in METHODS.items()], value=["draggan"], label="Methods")
            with gr.Row():
                run_btn = gr.Button("Run", variant="primary", elem_id="exp_run")
                stop_btn = gr.Button("Stop", variant="stop")
            fit_note = gr.Markdown("", elem_id="exp_fit")
            progress_md = gr.Markdown("", elem_id="exp_progress")
            table = gr.Dataframe(headers=EXPERIMENT_COLUMNS, label="Results", interactive=False, elem_id="exp_table")
            plot = gr.Image(type="filepath", label="Mean distance decay", show_label=False, interactive=False)
            result_file = gr.File(label="Results (JSON, CSV)", interactive=False, file_count="multiple")

    heavy = dict(concurrency_id="drag", concurrency_limit=None)
    test_btn.click(keep_on_error(2, 1)(bind(single_test, ctx)), [target_seed, points, detector],
                   [single_view, single_text], api_visibility="private", **heavy)
    inputs = [page["protocol"], pairs, max_steps, points, block, methods]
    outputs = [progress_md, table, result_file, plot]
    handler = bind(bind(run, ctx), runs)
    run_btn.click(keep_on_error(4, 0)(handler), inputs, outputs, api_visibility="private", **heavy)
    page.api("experiment", handler, inputs, outputs, **heavy)
    stop_btn.click(bind(stop_experiment, runs), None, None, api_name="stop_experiment", queue=False)

    def follow_images() -> None:
        for event in page.new_image_events:
            event.success(bind(offer, ctx), None, [detector, test_btn, run_btn, fit_note], show_progress="hidden",
                          api_visibility="private", concurrency_limit=None)
    page.wire_later.append(follow_images)
