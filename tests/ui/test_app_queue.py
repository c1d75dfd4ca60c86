"""Four visitors drag at once on a server with one device slot (issue 24 item 5), over HTTP with gradio_client.

What counts as a client's first answer: its first /drag output, which is either a frame of its drag or a
'waiting' report (reason 'waiting', its place in line and a rough wait; the image untouched). The bound: while
the first visitor's drag holds the device (paused at a step by a test gate, so the others must wait), each of
the other three has its first answer within FIRST_ANSWER_S seconds of pressing Drag (a liveness bound, generous
for a loaded machine; on today's hardware it is a fraction of a second). Then every drag finishes, and none
crosses into another: each one's frames carry only its own targets, and each image is its own."""
import json

import numpy as np
import pytest

from test_app import MOVE, all_outputs, client, load, server, wait_frames  # noqa: F401 (the fixture too)
from gates import gate_session

FIRST_ANSWER_S = 30


def test_four_clients_each_hear_back_at_once_and_their_drags_stay_apart(server):
    clients = [client(server) for _ in range(4)]
    for seed, c in enumerate(clients):
        c.predict(seed=seed + 1, api_name="/generate")
    before = [load(c.predict(api_name="/save_image")) for c in clients]
    gate = gate_session(server.built.ctx.sessions, clients[0].session_hash, at=2)
    pairs = [("[[6, 6]]", "[[24, 22]]"), ("[[25, 5]]", "[[5, 25]]"), ("[[8, 20]]", "[[20, 8]]"),
             ("[[16, 4]]", "[[16, 26]]")]

    jobs = [clients[0].submit(handles=pairs[0][0], targets=pairs[0][1], max_steps=8, frame_rate=0,
                              api_name="/drag", **MOVE)]
    assert gate.paused.wait(120), "the first drag never started"
    try:
        for c, (h, t) in zip(clients[1:], pairs[1:]):
            jobs.append(c.submit(handles=h, targets=t, max_steps=8, frame_rate=0, api_name="/drag", **MOVE))
        firsts = [wait_frames(job, 1, timeout=FIRST_ANSWER_S)[0][2] for job in jobs[1:]]
        assert not gate.resume.is_set() and not jobs[0].done()  # all answered while the first drag held the device
    finally:
        gate.resume.set()
    assert all(f["reason"] == "waiting" and not f["done"] for f in firsts), firsts
    assert sorted(f["queue"]["place"] for f in firsts) == [1, 2, 3], firsts

    for c, job, (h, t), was in zip(clients, jobs, pairs, before):
        frames = [o[2] for o in all_outputs(job)]
        assert frames[-1]["done"] and frames[-1]["reason"] in ("reached", "max_steps"), frames[-1]
        assert all(f["targets"] == [[float(v) for v in p] for p in json.loads(t)] for f in frames), (t, frames)
        drawn = [f for f in frames if f["reason"] != "waiting"]
        assert drawn and all(f["step"] >= 0 for f in drawn)
        assert not np.array_equal(load(c.predict(api_name="/save_image")), was)   # its own image moved
    # Each drag moved only its own image: undoing one brings back exactly its own picture.
    for c, was in zip(clients, before):
        c.predict(api_name="/undo")
        assert np.array_equal(load(c.predict(api_name="/save_image")), was)
