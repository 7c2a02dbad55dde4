"""Promise 1 under stress: a snapshot holds every change acknowledged before its trigger and
none after it, while writers, renamers and deleters work through the mount and snapshots are
taken back to back.

Every change is one step of a global sequence, made under one lock, so the changes have a
single order and the state after step K is known exactly (the model). A record written to a
file carries its step number; a renamed file's new name carries the rename's step; a
deleted file is gone. A snapshot must then equal the model at some step K (the trigger):
every file where the model has it, holding exactly its records up to K, and nothing of a
later step. K lies between the last step acknowledged before the snapshot was asked for and
the last one begun before it was taken. Each record is written and made durable
(`fdatasync`) before the step counts as acknowledged, so no cache stands between the
write and the daemon's gate.
"""

import os
import random
import threading
import time

import pytest

from lib.control import snapshot

RECORD = 64          # bytes; records never cross a page
DIRECTORIES = 3
FILES = 6
SECONDS = 3.0


class Model:
    """The tree as the sequence of steps made it: file id -> (path, [record steps])."""

    def __init__(self):
        self.files = {}
        self.history = []   # (step, op, file id, argument)

    def apply(self, step, op, fid, arg):
        self.history.append((step, op, fid, arg))
        if op == "create":
            self.files[fid] = [arg, []]
        elif op == "write":
            self.files[fid][1].append(step)
        elif op == "rename":
            self.files[fid][0] = arg
        elif op == "unlink":
            del self.files[fid]

    def at(self, k):
        """The tree after step k: path -> list of record steps."""
        files = {}
        for step, op, fid, arg in self.history:
            if step > k:
                break
            if op == "create":
                files[fid] = [arg, []]
            elif op == "write":
                files[fid][1].append(step)
            elif op == "rename":
                files[fid][0] = arg
            elif op == "unlink":
                del files[fid]
        return {path: records for path, records in files.values()}


def read_tree(root):
    """path (relative) -> list of record steps, for every regular file under `root`."""
    out = {}
    for d in range(DIRECTORIES):
        directory = root / f"d{d}"
        if not directory.is_dir():
            continue
        for entry in directory.iterdir():
            data = entry.read_bytes()
            assert len(data) % RECORD == 0, (entry, len(data))
            steps = []
            for i in range(0, len(data), RECORD):
                text = data[i:i + RECORD].rstrip(b".").decode()
                steps.append(int(text))
            out[f"d{d}/{entry.name}"] = steps
    return out


def name_step(path):
    """The step a file's name carries (its creation or its last rename)."""
    return int(path.rsplit(".", 1)[1])


def test_every_snapshot_is_the_tree_at_one_step(strategy_mount):
    kind, m = strategy_mount
    for d in range(DIRECTORIES):
        (m.mnt / f"d{d}").mkdir()
    model = Model()
    lock = threading.Lock()
    state = {"step": 0, "acknowledged": 0, "next_file": 0}
    stop = threading.Event()
    errors = []

    def next_step():
        state["step"] += 1
        return state["step"]

    def create_file(rng):
        fid = state["next_file"]
        state["next_file"] += 1
        step = next_step()
        path = f"d{rng.randrange(DIRECTORIES)}/f{fid}.{step}"
        fd = os.open(m.mnt / path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        os.fsync(fd)
        os.close(fd)
        model.apply(step, "create", fid, path)
        state["acknowledged"] = step

    def writer(seed):
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                with lock:
                    if len(model.files) < FILES:
                        create_file(rng)
                        continue
                    fid = rng.choice(sorted(model.files))
                    path = model.files[fid][0]
                    step = next_step()
                    fd = os.open(m.mnt / path, os.O_WRONLY | os.O_APPEND)
                    try:
                        os.write(fd, str(step).encode().ljust(RECORD, b"."))
                        os.fdatasync(fd)
                    finally:
                        os.close(fd)
                    model.apply(step, "write", fid, None)
                    state["acknowledged"] = step
        except Exception as e:  # reported by the test, not lost in the thread
            errors.append(e)

    def mover(seed):
        rng = random.Random(seed)
        try:
            while not stop.is_set():
                time.sleep(0.002)
                with lock:
                    if not model.files:
                        continue
                    fid = rng.choice(sorted(model.files))
                    path = model.files[fid][0]
                    step = next_step()
                    if rng.random() < 0.2:
                        os.unlink(m.mnt / path)
                        model.apply(step, "unlink", fid, None)
                    else:
                        new = f"d{rng.randrange(DIRECTORIES)}/f{fid}.{step}"
                        os.rename(m.mnt / path, m.mnt / new)
                        model.apply(step, "rename", fid, new)
                    state["acknowledged"] = step
        except Exception as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(1,)), threading.Thread(target=writer, args=(2,)),
               threading.Thread(target=mover, args=(3,))]
    for t in threads:
        t.start()
    taken = []
    try:
        deadline = time.time() + SECONDS
        while time.time() < deadline:
            before = state["acknowledged"]
            name = snapshot(m.mnt, force=True)
            after = state["step"]
            taken.append((name, before, after))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert not errors, errors
    assert len(taken) >= 3, taken
    assert state["step"] > 50, state

    for name, before, after in taken:
        tree = read_tree(m.backing / ".snapshots" / name)
        seen = [s for steps in tree.values() for s in steps] + [name_step(p) for p in tree]
        # The trigger is a step no earlier than the newest the snapshot shows, nor than the
        # newest acknowledged before it was asked for, and no later than the last one begun
        # before it returned (an unlink leaves no number behind, so every step in that
        # window is a candidate).
        low = max([before] + seen)
        assert low <= after, (kind, name, "holds a step begun after the snapshot", low, after)
        matches = [k for k in range(low, after + 1) if tree == model.at(k)]
        assert matches, (kind, name, "is the tree at no single step", low, after,
                         sorted(tree.items()), sorted(model.at(low).items()))
