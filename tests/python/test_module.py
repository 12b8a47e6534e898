"""The rdmaps Python module against a real server (UCX over the transport in
RDMAPS_TRANSPORT, default tcp): zero-copy numpy push/pull, and clear
exceptions for bad buffers, sizes, options and peers."""

import array
import ctypes
import logging
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
import unittest

import numpy as np

import rdmaps

import forked

TRANSPORT = os.environ.get("RDMAPS_TEST_TRANSPORT", "tcp")


def wait_for_a_call(worker, timeout=20):
    """Until a call of `worker` made on another thread is under way (counted with the GIL held: a close() or
    a signal from here then meets it); a fixed sleep ran out before the thread did, loaded."""
    until = time.monotonic() + timeout
    while worker.pending == 0 and time.monotonic() < until:
        time.sleep(0.005)


def start_catching(call):
    """Runs `call` on a thread of its own: the thread, and the list that gets the rdmaps.Error it raises."""
    raised = []

    def run():
        try:
            call()
        except rdmaps.Error as e:
            raised.append(e)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, raised


class ServerThread:
    def __init__(self, workers=1, log_connections=False, **options):
        self.server = rdmaps.Server("127.0.0.1:0", workers=workers, transport=TRANSPORT,
                                    log_connections=log_connections, **options)
        self.thread = threading.Thread(target=self.server.serve, daemon=True)
        self.thread.start()

    def close(self):
        self.server.stop()
        self.thread.join(timeout=30)


class ModuleTest(unittest.TestCase):
    def setUp(self):
        self.served = ServerThread(rule="sgd", lr=0.5, shard_floats=1000)
        self.worker = rdmaps.Worker(self.served.server.address, 0, transport=TRANSPORT, rule="sgd", lr=0.5,
                                    shard_floats=1000, timeout=30)
        self.worker.declare("w", 2500)  # three shards
        self.worker.declare("b", 7)
        self.worker.connect()

    def tearDown(self):
        self.worker.close()
        self.served.close()

    def test_sgd_through_numpy_buffers_is_exact(self):
        rng = np.random.default_rng(7)
        w0 = rng.standard_normal(2500).astype(np.float32)
        g = rng.standard_normal(2500).astype(np.float32)
        self.worker.init("w", w0)
        self.worker.push("w", g)
        self.worker.clock()
        out = np.full(2500, np.nan, dtype=np.float32)
        self.worker.pull("w", out)
        np.testing.assert_array_equal(out, w0 - np.float32(0.5) * g)
        # Any C-contiguous float32 buffer works, 2-D included.
        grid = np.empty((2, 1250), dtype=np.float32)
        self.worker.pull("w", grid)
        np.testing.assert_array_equal(grid.ravel(), out)
        stats = self.worker.stats()
        self.assertEqual(stats["pushes"], 3)  # one per shard
        self.assertEqual(self.worker.clock_value, 1)
        served = self.served.server.stats()
        self.assertEqual(served["pushes"], 3)
        # Every field of the C++ stats reaches Python (gpu_path was missing).
        self.assertEqual((stats["gpu_path"], stats["servers_resumed"], stats["servers_holding"]), ("none", 0, 0))
        self.assertIsInstance(stats["last_step_seconds"], float)
        self.assertEqual((served["rule"], served["workers_connected"], served["max_clock"]), ("sgd", 1, 1))
        self.assertEqual((sum(served["staleness"]), served["staleness_sum"]), (3, 0))
        self.assertEqual(served["staleness_max"], 0)  # every ServerStats field but the latency histograms
        self.assertEqual(served["bytes_in_per_worker"], [2500 * 4])
        self.assertEqual(served["rejected_by_reason"], {"sequence": 0, "header": 0, "non-finite": 0, "landing": 0})
        self.assertEqual((served["stall_warnings"], served["checkpoint_failures"]), (0, 0))
        # Closing says goodbye: the server counts a leave, not a loss.
        self.worker.close()
        for _ in range(500):
            if self.served.server.stats()["workers_left"]:
                break
            time.sleep(0.01)
        ended = self.served.server.stats()
        self.assertEqual((ended["workers_left"], ended["workers_lost"]), (1, 0))

    def test_a_learning_rate_set_before_connect_is_the_first_pushes(self):
        # As Client::set_learning_rate and the C ABI take it: Python said "call connect() first".
        served = ServerThread(rule="sgd", lr=0.5, shard_floats=1000)
        worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, rule="sgd", lr=0.5, shard_floats=1000,
                               timeout=30)
        try:
            worker.declare("w", 100)
            worker.set_learning_rate(0.25)
            # Past float32: named as given (it became inf, and the error named inf).
            with self.assertRaisesRegex(ValueError, r"lr=1e\+39 is past the largest float32"):
                worker.set_learning_rate(1e39)
            worker.connect()
            w0 = np.ones(100, dtype=np.float32)
            worker.init("w", w0)
            worker.push("w", np.full(100, 2.0, dtype=np.float32))
            worker.clock()
            out = np.empty(100, dtype=np.float32)
            worker.pull("w", out)
            np.testing.assert_array_equal(out, w0 - np.float32(0.25) * 2)
        finally:
            worker.close()
            served.close()

    def test_pulls_into_registered_memory_land_in_place_and_the_worker_holds_it(self):
        served = ServerThread(rule="sgd", lr=0.5, shard_floats=1000)
        worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, rule="sgd", lr=0.5, shard_floats=1000,
                               timeout=30)
        try:
            worker.declare("w", 2500)
            model = np.full(2500, np.nan, dtype=np.float32)
            references = sys.getrefcount(model)
            worker.register_memory(model)
            self.assertEqual(sys.getrefcount(model), references + 1, "the worker does not hold registered memory")
            with self.assertRaises(TypeError):
                worker.register_memory(np.zeros(4, dtype=np.float64))
            worker.connect()
            with self.assertRaises(TypeError):  # refused after connect() too, before the comm thread sees it
                worker.register_memory(np.zeros(4, dtype=np.float64))
            w0 = np.arange(2500, dtype=np.float32)
            worker.init("w", w0)
            worker.pull("w", model)
            np.testing.assert_array_equal(model, w0)
            # Over tcp the write-backs land straight in it; over shared memory they are put into the
            # receive region and copied (put_landing "auto": UCX 1.13 emulates puts into registered memory).
            self.assertEqual(worker.stats()["pull_bytes_in_place"], 2500 * 4 if TRANSPORT == "tcp" else 0)
            plain = np.zeros(2500, np.float32)
            worker.pull("w", plain)
            np.testing.assert_array_equal(plain, w0)
            self.assertEqual(worker.stats()["pull_bytes_in_place"], 2500 * 4 if TRANSPORT == "tcp" else 0)
            worker.close()
            self.assertEqual(sys.getrefcount(model), references, "a closed worker still holds registered memory")
        finally:
            worker.close()
            served.close()

    def test_registered_memory_cannot_be_resized_while_the_worker_holds_it(self):
        # The worker held the object but no buffer export of it, so array.array.extend() moved (and freed)
        # the memory pulls land in.
        early = array.array("f", bytes(4 * 7))
        unconnected = rdmaps.Worker("127.0.0.1:1", 0)
        unconnected.declare("b", 7)
        unconnected.register_memory(early)  # before connect(): Client::register_memory() itself
        late = array.array("f", bytes(4 * 7))
        self.worker.register_memory(late)  # after connect(): through the comm thread
        for registered in (early, late):
            with self.assertRaises(BufferError):
                registered.extend([0.0] * (1 << 20))
        unconnected.close()
        self.worker.close()
        for registered in (early, late):  # let go with the worker
            registered.extend([0.0] * (1 << 20))

    def test_put_landing_on_puts_pulls_into_registered_memory(self):
        served = ServerThread(rule="sgd", lr=0.5, shard_floats=1000)
        worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, rule="sgd", lr=0.5, shard_floats=1000,
                               timeout=30, put_landing="on")
        try:
            worker.declare("w", 2500)
            model = np.full(2500, np.nan, dtype=np.float32)
            worker.register_memory(model)
            worker.connect()
            w0 = np.arange(2500, dtype=np.float32) * 0.5
            worker.init("w", w0)
            worker.pull("w", model)
            np.testing.assert_array_equal(model, w0)
            # In place on both paths: by message over tcp, by put (emulated by UCX 1.13) over shared memory.
            self.assertEqual(worker.stats()["pull_bytes_in_place"], 2500 * 4)
            # Registered after connect(): held by the worker, and pulls land in it the same way.
            late = np.full(2500, np.nan, dtype=np.float32)
            references = sys.getrefcount(late)
            worker.register_memory(late)
            self.assertEqual(sys.getrefcount(late), references + 1, "the worker does not hold memory registered late")
            worker.pull("w", late)
            np.testing.assert_array_equal(late, w0)
            self.assertEqual(worker.stats()["pull_bytes_in_place"], 2 * 2500 * 4)
        finally:
            worker.close()
            served.close()

    def test_pull_many_fills_every_buffer_with_one_request_per_lane(self):
        w0 = np.arange(2500, dtype=np.float32)
        b0 = np.full(7, 3.5, dtype=np.float32)
        self.worker.init("w", w0)
        self.worker.init("b", b0)
        w, b = np.zeros(2500, np.float32), np.zeros(7, np.float32)
        before = self.worker.stats()["pulls"]
        self.worker.pull_many([("w", w), ("b", b)])
        np.testing.assert_array_equal(w, w0)
        np.testing.assert_array_equal(b, b0)
        separately = self.worker.stats()["pulls"] - before
        self.worker.pull_many([["b", b]])  # a list is a pair too
        np.testing.assert_array_equal(b, b0)
        self.worker.pull("w", w)
        self.worker.pull("b", b)
        self.assertLess(separately, self.worker.stats()["pulls"] - before - separately,
                        "a batched pull asked no fewer times than one pull per tensor")
        with self.assertRaisesRegex(ValueError, "'b'"):
            self.worker.pull_many([("w", w), ("b", np.zeros(8, np.float32))])

    def test_wrong_dtype_is_a_type_error_naming_the_tensor(self):
        with self.assertRaisesRegex(TypeError, r"push\('w'\): needs float32 data, got buffer format 'd'"):
            self.worker.push("w", np.zeros(2500))

    def test_native_float32_in_any_spelling_is_taken_and_big_endian_refused(self):
        # ctypes exports float32 as '<f' (an explicit byte order, this machine's), which was refused.
        native = (ctypes.c_float * 7)()
        self.assertEqual(memoryview(native).format, "<f")
        self.worker.init("b", np.arange(7, dtype=np.float32))
        self.worker.pull("b", native)
        self.assertEqual(list(native), list(range(7)))
        spelled = memoryview(bytearray(28)).cast("@f")
        self.worker.pull("b", spelled)
        self.assertEqual(spelled.tolist(), list(range(7)))
        big = (ctypes.c_float.__ctype_be__ * 7)()
        with self.assertRaisesRegex(TypeError, r"pull\('b'\): needs float32 data in this machine's byte order "
                                               r"\(little-endian\), got buffer format '>f'"):
            self.worker.pull("b", big)
        with self.assertRaisesRegex(TypeError, r"push\('b'\): .* got buffer format '>f'"):
            self.worker.push("b", np.zeros(7, dtype=">f4"))
        # Complex float32 ('Zf') is no byte-order matter: it was named as one.
        with self.assertRaisesRegex(TypeError, r"push\('b'\): needs float32 data, got buffer format 'Zf' of 8-byte"):
            self.worker.push("b", np.zeros(7, dtype=np.complex64))

    def test_arguments_of_the_wrong_type_are_named(self):
        # pybind11's own refusal listed every signature ("incompatible function arguments") and named none.
        values = np.zeros(7, dtype=np.float32)
        for call, said in ((lambda: self.worker.push(None, values), r"push: name=None is not a str"),
                           (lambda: self.worker.pull("b", None), r"pull\('b'\): a NoneType is not a float32 buffer"),
                           (lambda: self.worker.init("b", [0.0] * 7), r"init\('b'\): a list is not a float32 buffer"),
                           (lambda: self.worker.declare(None, 3), r"declare: name=None is not a str"),
                           (lambda: self.worker.register_memory(None), r"register_memory\('buffer'\): a NoneType"),
                           (lambda: self.worker.pull_many(5), r"pull_many: tensors=5 is not a list of \(name, buffer\)"),
                           (lambda: self.worker.pull_many([("b",)]), r"pull_many: \('b',\) is not a \(name, buffer\) pair"),
                           (lambda: self.worker.set_learning_rate("x"),
                            r"set_learning_rate: lr='x' is not a number or None")):
            with self.subTest(said=said):
                with self.assertRaisesRegex(TypeError, said):
                    call()

    def test_non_contiguous_is_a_value_error(self):
        strided = np.zeros(5000, dtype=np.float32)[::2]
        with self.assertRaisesRegex(ValueError, r"pull\('w'\): needs contiguous"):
            self.worker.pull("w", strided)

    def test_wrong_size_names_the_declared_size(self):
        with self.assertRaises(rdmaps.InvalidArgument) as ctx:
            self.worker.push("b", np.zeros(8, dtype=np.float32))
        self.assertIn("'b'", str(ctx.exception))
        self.assertIn("7", str(ctx.exception))
        self.assertEqual(ctx.exception.code, "invalid-argument")
        # A bad argument fails that call alone: the worker goes on.
        self.worker.init("b", np.ones(7, dtype=np.float32))
        self.worker.push("b", np.ones(7, dtype=np.float32))
        out = np.zeros(7, dtype=np.float32)
        self.worker.pull("b", out)
        np.testing.assert_array_equal(out, np.full(7, 0.5, dtype=np.float32))
        self.worker.clock()
        self.assertEqual(self.worker.stats()["clocks"], 1)

    def test_a_bad_argument_nobody_waited_for_is_reported_by_wait_all(self):
        good = np.ones(7, dtype=np.float32)
        bad = np.zeros(8, dtype=np.float32)
        self.worker._submit_push("b", bad.ctypes.data, bad.nbytes)
        self.worker.wait(self.worker._submit_push("b", good.ctypes.data, good.nbytes))
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "'b'"):
            self.worker.wait_all()
        self.worker.wait_all()  # reported once

    def test_unknown_tensor_and_read_only_output(self):
        # The call, the name and what was declared instead.
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "push of 'nope': no tensor of that name was declared; "
                                    "declared: '.*'b'"):
            self.worker.push("nope", np.zeros(7, dtype=np.float32))
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "pull of 'nope': no tensor"):
            self.worker.pull("nope", np.zeros(7, dtype=np.float32))
        frozen = np.zeros(7, dtype=np.float32)
        frozen.flags.writeable = False
        with self.assertRaisesRegex(ValueError, r"pull\('b'\): the output buffer must be writable"):
            self.worker.pull("b", frozen)
        self.assertEqual(self.worker.stats()["pulls"], 0)  # the worker goes on

    def test_declare_after_connect(self):
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "after connect"):
            self.worker.declare("late", 3)

    def test_counts_out_of_range_name_the_argument(self):
        with self.assertRaisesRegex(ValueError, r"rdmaps.Worker.wait: ticket=-1 is not a whole number"):
            self.worker.wait(-1)
        with self.assertRaisesRegex(TypeError, r"rdmaps.Worker.wait: ticket='1' is not a whole number"):
            self.worker.wait("1")
        with self.assertRaisesRegex(ValueError, r"rdmaps.Worker.declare: floats of 'x'=-5 is not a whole number"):
            self.worker.declare("x", -5)
        self.worker.push("w", np.zeros(2500, dtype=np.float32))  # the worker is still usable

    def test_a_forked_child_neither_uses_nor_closes_its_parents_worker(self):
        g = np.ones(7, dtype=np.float32)
        self.worker.push("b", g)
        self.worker.clock()
        pid = os.fork()
        if pid == 0:  # the child: its calls went out on the parent's connections, its exit hung
            code = 4
            try:
                try:
                    self.worker.push("b", g)
                    code = 2
                except rdmaps.InvalidArgument as e:
                    code = 0 if "belongs to process" in str(e) else 3
                self.worker.close()  # neither hangs (it joined a thread the child lacks) nor says goodbye
                self.worker = None  # nor does the destructor
            finally:
                os._exit(code)
        code = forked.wait_or_kill(pid, 20)
        self.assertIsNotNone(code, "the forked child hung")
        self.assertEqual(code, 0, "2: the child's push was accepted; 3: refused for another reason")
        for _ in range(3):
            self.worker.push("b", g)
            self.worker.clock()
        out = np.zeros(7, dtype=np.float32)
        self.worker.pull("b", out)
        stats = self.served.server.stats()
        self.assertEqual(stats["rejected"], 0)
        self.assertEqual(stats["workers_left"], 0)

    def test_reading_stats_from_another_thread_never_fails_the_trainers_calls(self):
        # A monitoring thread's stats() and clock_value ran on the Client beside
        # the comm thread's operation, which refused one or the other.
        g = np.zeros(2500, dtype=np.float32)
        errors, reads, stop = [], [0], threading.Event()

        def monitor():
            while not stop.is_set():
                try:
                    self.worker.stats()
                    self.worker.clock_value
                    reads[0] += 1
                except rdmaps.Error as e:
                    errors.append("monitor: " + str(e))

        thread = threading.Thread(target=monitor)
        thread.start()
        try:
            for _ in range(300):
                try:
                    self.worker.push("w", g)
                    self.worker.clock()
                    self.worker.pull("w", g)
                except rdmaps.Error as e:
                    errors.append("trainer: " + str(e))
        finally:
            stop.set()
            thread.join()
        self.assertEqual(errors, [])
        self.assertGreater(reads[0], 0)
        self.assertEqual((self.worker.clock_value, self.worker.stats()["pushes"]), (300, 900))

    def test_a_monitors_clock_value_never_takes_the_trainers_refusal(self):
        # clock_value waits for every queued operation and raised the earliest refusal: a monitoring thread's
        # read took the trainer's InvalidArgument, and the trainer's refused push returned as if sent.
        bad = np.zeros(8, dtype=np.float32)  # "b" holds 7
        taken, refused, stop = [], [0], threading.Event()

        def monitor():
            while not stop.is_set():
                try:
                    self.worker.clock_value
                except rdmaps.Error as e:
                    taken.append(str(e))

        thread = threading.Thread(target=monitor)
        thread.start()
        try:
            for _ in range(300):
                try:
                    self.worker.push("b", bad)
                except rdmaps.InvalidArgument:
                    refused[0] += 1
        finally:
            stop.set()
            thread.join()
        self.assertEqual(taken, [])
        self.assertEqual(refused[0], 300)

    def test_reading_stats_while_another_thread_connects_fails_neither(self):
        # Before the comm thread exists the monitor's stats() ran on the Client
        # beside connect()'s thread: either call was refused (2 in 150 connects failed).
        for _ in range(60):
            served = ServerThread(rule="sgd", lr=0.5)
            worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, rule="sgd", lr=0.5, timeout=30)
            worker.declare("w", 8)
            errors, stop = [], threading.Event()

            def monitor():
                while not stop.is_set():
                    try:
                        worker.stats()
                    except rdmaps.Error as e:
                        errors.append("monitor: " + str(e))

            thread = threading.Thread(target=monitor)
            thread.start()
            try:
                worker.connect()
            except rdmaps.Error as e:
                errors.append("connect: " + str(e))
            finally:
                stop.set()
                thread.join()
                worker.close()
                served.close()
            self.assertEqual(errors, [])


    def test_declare_and_register_memory_while_another_thread_connects_wait_for_it(self):
        # They ran on the Client beside connect()'s thread and were refused as "another call of this client
        # ... on another thread", which a Python user cannot act on.
        port = socket.socket()
        port.bind(("127.0.0.1", 0))
        address = "127.0.0.1:%d" % port.getsockname()[1]
        port.close()  # nobody listens: the connect waits for a server up to its timeout
        worker = rdmaps.Worker(address, 0, transport=TRANSPORT, timeout=2)
        worker.declare("w", 8)
        try:
            connecting, raised = start_catching(worker.connect)
            time.sleep(0.3)
            self.assertTrue(connecting.is_alive(), "the connect did not wait")
            memory = array.array("f", [0.0] * 8)
            worker.register_memory(memory)  # waits for the connect, which fails: taken before connect()
            worker.declare("b", 4)
            connecting.join()
            self.assertEqual([e.code for e in raised], ["unreachable"])
        finally:
            worker.close()


class RejectedPushTest(unittest.TestCase):
    # A push the server refuses (a NaN under check_nan) returned as if
    # applied, and stats() said nothing of it.
    def test_a_push_the_server_rejects_is_counted(self):
        served = ServerThread(rule="sgd", lr=0.5, shard_floats=1000, check_nan=True)
        worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, rule="sgd", lr=0.5,
                               shard_floats=1000, check_nan=True, timeout=30)
        try:
            worker.declare("w", 1000)
            worker.connect()
            w0 = np.ones(1000, dtype=np.float32)
            worker.init("w", w0)
            bad = np.ones(1000, dtype=np.float32)
            bad[500] = np.nan
            worker.push("w", bad)
            out = np.zeros(1000, dtype=np.float32)
            worker.pull("w", out)
            np.testing.assert_array_equal(out, w0)
            self.assertEqual(worker.stats()["messages_rejected"], 1)
            worker.push("w", np.zeros(1000, dtype=np.float32))
            worker.pull("w", out)
            self.assertEqual(worker.stats()["messages_rejected"], 1)
        finally:
            worker.close()
            served.close()


class ConfigurationTest(unittest.TestCase):
    def test_unknown_option_names_the_flag(self):
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "'--no-such-option'"):
            rdmaps.Worker("127.0.0.1:1", 0, no_such_option=1)

    def test_bad_value_names_the_flag(self):
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "staleness"):
            rdmaps.Worker("127.0.0.1:1", 0, staleness="soon")

    def test_indices_and_counts_out_of_range_name_the_argument(self):
        for make, text in ((lambda: rdmaps.Server("127.0.0.1:0", index=-1), "rdmaps.Server: index=-1"),
                           (lambda: rdmaps.Server("127.0.0.1:0", workers=-1), "rdmaps.Server: workers=-1")):
            with self.assertRaisesRegex(ValueError, text + " is not a whole number from 0 to 4294967295"):
                make()
        # A server serves worker ids below 4096 (kMaxWorkers): 5000 was taken here and refused by connect()
        # as a protocol error.
        for worker in (4096, 5000, 2**40, -1):
            with self.assertRaisesRegex(ValueError, f"rdmaps.Worker: worker={worker} is not a whole number from 0 "
                                                    "to 4095"):
                rdmaps.Worker("127.0.0.1:1", worker)
        rdmaps.Worker("127.0.0.1:1", 4095).close()
        with self.assertRaisesRegex(TypeError, r"rdmaps.Worker: worker=1.5 is not a whole number"):
            rdmaps.Worker("127.0.0.1:1", 1.5)
        with self.assertRaisesRegex(TypeError, r"rdmaps.Worker: servers=None is not"):
            rdmaps.Worker(None, 0)
        # Each entry as typed and checked, as RDMAPS_SERVERS and the C API's: an empty one was dropped, so
        # "a,,b" named b as server 1; a duplicate or port 0 was found only at connect().
        for servers, said in (("127.0.0.1:1,,127.0.0.1:2", "='127.0.0.1:1,,127.0.0.1:2': entry 2 is empty"),
                              ("127.0.0.1:1,", "entry 2 is empty"),
                              (["127.0.0.1:1", ""], "entry 2 is empty"),
                              (["127.0.0.1:1", "127.0.0.1:1"], "'127.0.0.1:1' is listed twice"),
                              ("127.0.0.1:0", "entry 1 '127.0.0.1:0' has port 0"),
                              (["127.0.0.1:1,127.0.0.1:2"], "entry 1 '127.0.0.1:1,127.0.0.1:2' holds a comma")):
            with self.assertRaisesRegex(ValueError, r"rdmaps\.Worker: servers.*" + re.escape(said)):
                rdmaps.Worker(servers, 0)
        rdmaps.Worker(["127.0.0.1:1", "127.0.0.1:2"], 0).close()
        worker = rdmaps.Worker("127.0.0.1:1", 0)
        with self.assertRaisesRegex(rdmaps.InvalidArgument, r"declare\('huge'\): 1099511627777 floats, over"):
            worker.declare("huge", 2**40 + 1)
        worker.close()

    def test_a_table_over_max_bytes_is_refused_naming_the_limit(self):
        served = ServerThread(max_bytes=1000)
        try:
            worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, timeout=30)
            worker.declare("w", 300)  # 1200 bytes
            with self.assertRaisesRegex(rdmaps.Error, "1200 bytes.* over this server's limit of 1000 bytes"):
                worker.connect()
            worker.close()
        finally:
            served.close()
        for bad, text in (({"max_bytes": -1}, "max_bytes=-1"), ({"stall_warning": -1}, "stall_warning=-1")):
            with self.assertRaisesRegex((ValueError, rdmaps.InvalidArgument), text):
                rdmaps.Server("127.0.0.1:0", transport="tcp", **bad)
        os.environ["RDMAPS_MAX_BYTES"] = "lots"  # as rdmaps-server, the variable is the default
        try:
            with self.assertRaisesRegex(ValueError, "RDMAPS_MAX_BYTES='lots' is not a whole number"):
                rdmaps.Server("127.0.0.1:0", transport="tcp")
            os.environ["RDMAPS_MAX_BYTES"] = "\uff11\uff12"  # str.isdigit() takes full-width digits: it served 12
            with self.assertRaisesRegex(ValueError, "RDMAPS_MAX_BYTES='\uff11\uff12' is not a whole number"):
                rdmaps.Server("127.0.0.1:0", transport="tcp")
        finally:
            del os.environ["RDMAPS_MAX_BYTES"]
        # pybind11 listed its signatures for these, and metrics=0 turned metrics off without a word.
        for bad in ({"metrics": 9464}, {"metrics": 0}, {"listen": None}):
            with self.subTest(bad=bad):
                with self.assertRaisesRegex(TypeError, f"rdmaps.Server: {next(iter(bad))}=.* is not a \"HOST:PORT\""):
                    rdmaps.Server(**bad)
        with self.assertRaisesRegex(TypeError, "rdmaps.Worker: metrics=0 is not a \"HOST:PORT\" string or None"):
            rdmaps.Worker("127.0.0.1:9", 0, metrics=0)
        # Bytes that are not UTF-8 in the library's message are quoted, not a UnicodeDecodeError in its place.
        os.environb[b"RDMAPS_LR"] = b"\xff\xfe1"
        try:
            with self.assertRaisesRegex(rdmaps.InvalidArgument, r"RDMAPS_LR: '\\xff\\xfe1' is not a number"):
                rdmaps.describe_config()
        finally:
            del os.environ["RDMAPS_LR"]

    def test_config_that_is_not_a_dict_or_minus_infinity_is_refused(self):
        with self.assertRaisesRegex(TypeError, "config='--lr 3' is not a dict of options"):
            rdmaps.Worker("127.0.0.1:1", 0, config="--lr 3")
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "staleness.*-inf"):
            rdmaps.describe_config(staleness=float("-inf"))

    def test_numbers_beyond_their_field_name_the_flag(self):
        for option, value, flag in (("staleness", 99999999999999999999, "staleness"),
                                    ("dc_bound", 1e40, "dc-bound"), ("lr", 1e-50, "lr")):
            with self.assertRaisesRegex(rdmaps.InvalidArgument, flag):
                rdmaps.Worker("127.0.0.1:1", 0, **{option: value})
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "timeout=nan"):
            rdmaps.Worker("127.0.0.1:1", 0, timeout=float("nan"))
        for interval in (-1, float("nan")):
            with self.assertRaisesRegex(rdmaps.InvalidArgument, "stats_interval"):
                rdmaps.Server("127.0.0.1:0", transport="tcp", stats_interval=interval)
        from rdmaps import launcher
        with self.assertRaisesRegex(launcher.LaunchError, "num_servers=0"):
            launcher.detect({"RDMAPS_RANK": "0", "RDMAPS_WORLD_SIZE": "2"}, 0)

    def test_a_refused_connect_is_refused_again(self):
        served = ServerThread(rule="sgd")
        try:
            worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, rule="momentum", timeout=30)
            worker.declare("w", 10)
            for _ in range(2):  # not connected after the first refusal
                with self.assertRaisesRegex(rdmaps.Error, "refused"):
                    worker.connect()
            with self.assertRaisesRegex(rdmaps.InvalidArgument, "connect"):
                worker.push("w", np.zeros(10, dtype=np.float32))
            worker.close()
        finally:
            served.close()

    def memory_cgroup(self, bytes_):
        """A memory cgroup (v1 or v2) limited to `bytes_`: its path and limit file; skips the test where none can be made."""
        group = None
        for root, limit in (("/sys/fs/cgroup/memory", "memory.limit_in_bytes"), ("/sys/fs/cgroup", "memory.max")):
            if os.path.exists(os.path.join(root, limit if root.endswith("memory") else "cgroup.controllers")):
                group = os.path.join(root, f"rdmaps-test-module-{os.getpid()}")
                break
        try:
            os.mkdir(group)
            with open(os.path.join(group, limit), "w") as f:
                f.write(str(bytes_))
        except (TypeError, OSError) as e:
            if group and os.path.isdir(group):
                os.rmdir(group)
            self.skipTest(f"cannot make a memory cgroup here (needs root and a writable cgroup mount): {e}")
        return group, limit

    def servers_in_memory_cgroup(self, bytes_, workers, servers=1, index=None):
        """DC-ASGD-a rdmaps.Servers of one job for `workers`, in one memory cgroup of `bytes_`: the cgroup, the
        processes, their addresses. `index`: only that server of the job's `servers`."""
        group, _ = self.memory_cgroup(bytes_)
        code = ("import os, sys, rdmaps\n"
                "open(sys.argv[1], 'w').write(str(os.getpid()))\n"
                "s = rdmaps.Server('127.0.0.1:0', index=int(sys.argv[4]), servers=int(sys.argv[5]),\n"
                "                  workers=int(sys.argv[3]), transport=sys.argv[2], rule='dc-asgd-a', log_connections=False)\n"
                "print(s.address, flush=True)\n"
                "s.serve()\n")
        ps = [subprocess.Popen([sys.executable, "-c", code, os.path.join(group, "cgroup.procs"), TRANSPORT,
                                str(workers), str(i), str(servers)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True) for i in (range(servers) if index is None else [index])]
        addresses = [p.stdout.readline().strip() for p in ps]
        if not all(re.fullmatch(r"127\.0\.0\.1:\d+", a) for a in addresses):
            for p in ps:
                p.kill()
                p.communicate()
            os.rmdir(group)
            self.fail(f"the servers did not start: {addresses!r}")
        return group, ps, addresses

    def connect_each(self, addresses, workers, floats):
        """Workers 0..workers-1 of `floats` each: those admitted, and the refusals of the others (id, message)."""
        admitted, refused = [], []
        for i in range(workers):
            worker = rdmaps.Worker(addresses, i, transport=TRANSPORT, rule="dc-asgd-a", timeout=30)
            worker.declare("w", floats)
            try:
                worker.connect()
                admitted.append(worker)
            except rdmaps.Error as e:
                refused.append((i, str(e)))
                worker.close()
        return admitted, refused

    def test_a_server_with_memory_for_no_worker_refuses_the_first_at_once(self):
        # A server in a 256 MiB memory cgroup (as Slurm's ConstrainRAMSpace or a
        # container sets) asked for a 160 MB range under DC-ASGD-a (parameters,
        # mean square and the worker's backup: 480 MB): the worker hears why
        # before anything is allocated, not a server the kernel killed mid-run.
        group, (p,), (address,) = self.servers_in_memory_cgroup(256 << 20, workers=1)
        try:
            worker = rdmaps.Worker(address, 0, transport=TRANSPORT, rule="dc-asgd-a", timeout=30)
            worker.declare("w", 40 << 20)
            started = time.monotonic()
            # Refused for now (a later connect may pass, once memory is there): its own class, a ConnectionRefusedError.
            with self.assertRaisesRegex(rdmaps.RefusedForNow, r"refused worker 0: this server's range and one worker "
                                        r"need about .* but .* is available \(the limit of memory cgroup .*"
                                        r"rdmaps-test-module-.*\): not one worker fits"):
                worker.connect()
            self.assertTrue(issubclass(rdmaps.RefusedForNow, rdmaps.Error)
                            and issubclass(rdmaps.RefusedForNow, ConnectionRefusedError))
            self.assertLess(time.monotonic() - started, 20)
            worker.close()
            self.assertIsNone(p.poll(), "the server died instead of refusing")
        finally:
            p.kill()
            p.communicate()
            os.rmdir(group)

    def test_workers_past_a_servers_memory_are_refused_and_it_serves_on(self):
        # The same cgroup, a 40 MB range under DC-ASGD-a (80 MB for parameters and mean square, 40 MB more per
        # worker): room for a few. The server warned and admitted them all, and the kernel killed it as their
        # copies were faulted in; the workers heard only "closed the connection". The memory of those that
        # leave is theirs no more: a refused one is admitted then (it stayed counted, and was refused).
        group, (p,), (address,) = self.servers_in_memory_cgroup(256 << 20, workers=8)
        workers = []
        try:
            workers, refused = self.connect_each(address, 8, 10 << 20)
            self.assertGreaterEqual(len(workers), 1, refused[:1])
            self.assertGreaterEqual(len(refused), 1, "eight workers of 40 MB each fitted in 256 MB")
            self.assertRegex(refused[0][1], r"this server has no memory for worker \d+: it needs .* available "
                                            r"(when its lanes started|now) \(the limit of memory cgroup .*\)")
            values = np.ones(10 << 20, dtype=np.float32)
            workers[0].init("w", values)
            for w in workers:
                w.push("w", values)
                w.pull("w", values)
            self.assertIsNone(p.poll(), "the server died instead of refusing")
            for w in workers:
                w.close()
            workers = []
            late = rdmaps.Worker(address, refused[0][0], transport=TRANSPORT, rule="dc-asgd-a", timeout=30)
            late.declare("w", 10 << 20)
            deadline = time.monotonic() + 30
            while True:  # the server sees them leave, and admissions of the last 5 s stay counted
                try:
                    late.connect()
                    break
                except rdmaps.Error as e:
                    if time.monotonic() > deadline:
                        self.fail(f"worker {refused[0][0]} was still refused once the others left: {e}")
                    late.close()
                    late = rdmaps.Worker(address, refused[0][0], transport=TRANSPORT, rule="dc-asgd-a", timeout=30)
                    late.declare("w", 10 << 20)
                    time.sleep(0.5)
            late.close()
        finally:
            for w in workers:
                w.close()
            p.kill()
            p.communicate()
            os.rmdir(group)

    def test_servers_sharing_memory_each_refuse_what_it_has_not(self):
        # Two servers of a job in one cgroup each budgeted against all of it, and the kernel killed one at the
        # sixth worker: what is available as each worker comes counts too.
        group, ps, addresses = self.servers_in_memory_cgroup(256 << 20, workers=16, servers=2)
        workers = []
        try:
            workers, refused = self.connect_each(addresses, 16, 4 << 20)
            self.assertGreaterEqual(len(workers), 1, refused[:1])
            self.assertGreaterEqual(len(refused), 1, "sixteen workers fitted two servers in 256 MB")
            self.assertTrue(any("available now (the limit of memory cgroup" in why for _, why in refused), refused)
            values = np.ones(4 << 20, dtype=np.float32)
            workers[0].init("w", values)
            for w in workers:
                w.push("w", values)
                w.pull("w", values)
            self.assertEqual([p.poll() for p in ps], [None, None], "a server died instead of refusing")
        finally:
            for w in workers:
                w.close()
            for p in ps:
                p.kill()
                p.communicate()
            os.rmdir(group)

    def test_a_worker_no_server_of_its_job_has_memory_for_joins_none(self):
        # Server 1 in a 256 MiB cgroup, server 0 beside it without one; a worker whose half of the table does not
        # fit server 1 (160 MB under DC-ASGD-a: parameters, mean square and its backup). Its probes passed (the
        # one of a server without a table looked at no memory), server 0 admitted it and fixed the table, then
        # server 1 refused it: the job was left half-joined, and the same worker with a table that fits was
        # refused by server 0 for good ("its declared tensors differ from the first worker's table").
        group, (low,), (low_address,) = self.servers_in_memory_cgroup(256 << 20, workers=1, servers=2, index=1)
        server = ServerThread(workers=1, rule="dc-asgd-a", index=0, servers=2)
        try:
            addresses = [server.server.address, low_address]
            worker = rdmaps.Worker(addresses, 0, transport=TRANSPORT, rule="dc-asgd-a", timeout=30)
            worker.declare("w", 80 << 20)
            with self.assertRaisesRegex(rdmaps.Error, rf"server {re.escape(low_address)} refused worker 0: this "
                                        r"server's range and one worker need about .*not one worker fits"):
                worker.connect()
            worker.close()
            worker = rdmaps.Worker(addresses, 0, transport=TRANSPORT, rule="dc-asgd-a", timeout=30)
            worker.declare("w", 1 << 20)
            worker.connect()  # both servers: neither had fixed a table
            values = np.ones(1 << 20, dtype=np.float32)
            worker.init("w", values)
            worker.push("w", values)
            worker.pull("w", values)
            worker.close()
            self.assertIsNone(low.poll(), "the server died instead of refusing")
        finally:
            server.close()
            low.kill()
            low.communicate()
            os.rmdir(group)

    def test_ctrl_c_stops_a_serving_server(self):
        code = ("import rdmaps; s = rdmaps.Server('127.0.0.1:0', transport='tcp', log_connections=False); "
                "print(s.address, flush=True); s.serve()")
        p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            self.assertRegex(p.stdout.readline(), r"127\.0\.0\.1:\d+")
            p.send_signal(signal.SIGINT)
            _, err = p.communicate(timeout=20)
        finally:
            if p.poll() is None:
                p.kill()
        self.assertNotEqual(p.returncode, 0)
        self.assertIn("KeyboardInterrupt", err)

    def test_ctrl_c_ends_a_blocked_wait_and_the_buffer_stays_referenced_until_done(self):
        served = ServerThread(workers=2, rule="sgd", lr=0.5, shard_floats=1000, staleness=0)
        opts = dict(transport=TRANSPORT, rule="sgd", lr=0.5, shard_floats=1000, staleness=0, timeout=30)
        workers = [rdmaps.Worker(served.server.address, i, **opts) for i in range(2)]
        try:
            for w in workers:
                w.declare("w", 2500)
                w.connect()
            w0, w1 = workers
            start = np.arange(2500, dtype=np.float32)
            w0.init("w", start)

            def interrupted(call):
                timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
                timer.start()
                try:
                    with self.assertRaises(KeyboardInterrupt):
                        call()  # would end in rdmaps.Timeout after 30 s if Ctrl-C waited for it
                finally:
                    timer.join()

            # Bulk-synchronous: worker 0's clock waits for worker 1's, and its pull behind it.
            interrupted(w0.clock)
            out = np.full(2500, np.nan, dtype=np.float32)
            references = sys.getrefcount(out)
            interrupted(lambda: w0.pull("w", out))
            self.assertEqual(sys.getrefcount(out), references + 1, "the worker let go of a buffer still being pulled into")
            self.assertEqual(w0.pending, 2)
            w1.clock()  # both operations of worker 0 go on and finish
            w0.wait_all()
            self.assertEqual(sys.getrefcount(out), references)
            np.testing.assert_array_equal(out, start)
            self.assertEqual(w0.clock_value, 1)
        finally:
            for w in workers:
                w.close()
            served.close()

    def test_ctrl_c_reaches_a_connect_waiting_for_its_server_and_a_stats_behind_it(self):
        # connect() waits for a server not listening yet; a stats() from the main thread behind another
        # thread's connect waited for all of it, Ctrl-C or not.
        import socket
        held = socket.socket()  # bound, never listening: connections to it are refused
        held.bind(("127.0.0.1", 0))
        self.addCleanup(held.close)
        port = held.getsockname()[1]
        w = rdmaps.Worker("127.0.0.1:%d" % port, 0, transport=TRANSPORT, timeout=20)
        w.declare("w", 10)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        try:
            with self.assertRaises(KeyboardInterrupt):
                w.connect()  # nobody listens there: it waits, then raises ConnectionError after 20 s
        finally:
            timer.join()
        w.close()
        w = rdmaps.Worker("127.0.0.1:%d" % port, 0, transport=TRANSPORT, timeout=20)
        w.declare("w", 10)
        connecting, failed = start_catching(w.connect)
        time.sleep(1.0)  # the connect holds the worker (it waits 20 s: a long start-up's margin costs nothing)
        timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
        timer.start()
        started = time.monotonic()
        try:
            with self.assertRaises(KeyboardInterrupt):
                w.stats()
        finally:
            timer.join()
        self.assertLess(time.monotonic() - started, 10)
        w.close()  # ends the connect (cancelled)
        connecting.join()
        self.assertEqual(len(failed), 1)
        self.assertIn("cancelled", str(failed[0]))

    def test_ctrl_c_and_close_end_a_connect_to_a_silent_server(self):
        # Something that took the connection and never answers (a server resuming a checkpoint, a stopped one):
        # connect() waited out its whole timeout before Ctrl-C or close() from another thread counted.
        import socket
        with socket.socket() as silent:
            silent.bind(("127.0.0.1", 0))
            silent.listen()
            address = "127.0.0.1:%d" % silent.getsockname()[1]
            w = rdmaps.Worker(address, 0, transport=TRANSPORT, timeout=20)
            w.declare("w", 10)
            timer = threading.Timer(0.3, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            try:
                with self.assertRaises(KeyboardInterrupt):
                    w.connect()  # raised rdmaps.Timeout after 20 s before
            finally:
                timer.join()
            w.close()
            w = rdmaps.Worker(address, 0, transport=TRANSPORT, timeout=20)
            w.declare("w", 10)
            closer = threading.Timer(0.3, w.close)
            closer.start()
            try:
                with self.assertRaisesRegex(rdmaps.Error, "cancelled"):
                    w.connect()
            finally:
                closer.join()

    def test_a_buffer_an_interrupted_wait_left_in_flight_cannot_be_resized(self):
        # The worker kept the object but no buffer export of it: extend() moved the memory the pull writes.
        served = ServerThread(workers=2, rule="sgd", lr=0.5, shard_floats=1000, staleness=0)
        w0 = self.bsp_worker(served)
        try:
            out = array.array("f", bytes(4 * 2500))
            for call in (w0.clock, lambda: w0.pull("w", out)):  # the pull waits behind the clock
                timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
                timer.start()
                try:
                    with self.assertRaises(KeyboardInterrupt):
                        call()
                finally:
                    timer.join()
            with self.assertRaises(BufferError):
                out.extend([0.0] * (1 << 20))
            w0.close()  # ends the abandoned operations
            out.extend([0.0] * (1 << 20))
        finally:
            w0.close()
            served.close()

    def bsp_worker(self, served):
        w = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, rule="sgd", lr=0.5, shard_floats=1000,
                          staleness=0, timeout=30)
        w.declare("w", 2500)
        w.connect()
        return w

    def test_close_from_another_thread_ends_its_blocked_call(self):
        # close() while another thread waited in the worker freed the client under that thread (SIGSEGV).
        served = ServerThread(workers=2, rule="sgd", lr=0.5, shard_floats=1000, staleness=0)
        w0 = self.bsp_worker(served)
        try:
            raised = []

            def blocked():
                try:
                    w0.clock()  # bulk-synchronous: waits for worker 1, which never comes
                except rdmaps.Error as e:
                    raised.append(e)

            t = threading.Thread(target=blocked)
            t.start()
            wait_for_a_call(w0)
            time.sleep(0.3)
            self.assertTrue(t.is_alive(), "the clock did not wait for worker 1")
            start = time.monotonic()
            w0.close()
            t.join(timeout=20)
            self.assertFalse(t.is_alive())
            self.assertLess(time.monotonic() - start, 15, "close() waited out the blocked call's 30 s timeout")
            self.assertEqual([e.code for e in raised], ["cancelled"])
            with self.assertRaisesRegex(rdmaps.InvalidArgument, "the worker was closed"):
                w0.clock()
        finally:
            w0.close()
            served.close()

    def test_close_after_ctrl_c_ends_the_abandoned_wait_at_once(self):
        # The KeyboardInterrupt came at once, but closing (or exiting) waited out the clock's 30 s timeout.
        served = ServerThread(workers=2, rule="sgd", lr=0.5, shard_floats=1000, staleness=0)
        w0 = self.bsp_worker(served)
        try:
            timer = threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT))
            timer.start()
            try:
                with self.assertRaises(KeyboardInterrupt):
                    w0.clock()
            finally:
                timer.join()
            start = time.monotonic()
            w0.close()
            self.assertLess(time.monotonic() - start, 15, "close() waited out the abandoned clock's 30 s timeout")
        finally:
            w0.close()
            served.close()

    def test_close_from_a_signal_handler_ends_the_call_it_interrupted(self):
        # A handler runs inside the wait it interrupts (signal.signal(SIGTERM, lambda *a: w.close())):
        # close() waited for that very call to end, for good, and no Ctrl-C could end it. The signal is
        # sent once the call is under way (its operation queued; a connect: a second in).
        script = ("import os, signal, sys, threading, time, rdmaps\n"
                  "call = sys.argv[2]\n"
                  "s = rdmaps.Server('127.0.0.1:0', workers=2, transport=sys.argv[1], staleness=0,\n"
                  "                  log_connections=False)\n"
                  "threading.Thread(target=s.serve, daemon=True).start()\n"
                  "w = rdmaps.Worker(s.address if call != 'connect' else '127.0.0.1:9', 0,\n"
                  "                  transport=sys.argv[1], timeout=40)\n"
                  "w.declare('w', 10)\n"
                  "if call != 'connect':\n"
                  "    w.connect()\n"
                  "signal.signal(signal.SIGALRM, lambda *a: w.close())\n"
                  "def send():\n"
                  "    until = time.monotonic() + 20\n"
                  "    while (w.pending == 0 and call != 'connect') and time.monotonic() < until:\n"
                  "        time.sleep(0.005)\n"
                  "    time.sleep(1.0 if call == 'connect' else 0.1)\n"
                  "    os.kill(os.getpid(), signal.SIGALRM)\n"
                  "threading.Thread(target=send, daemon=True).start()\n"
                  "try:\n"
                  "    if call == 'clock':\n"
                  "        w.clock()  # bulk-synchronous: waits for worker 1, which never comes\n"
                  "    elif call == 'stats':\n"
                  "        w._submit_clock()\n"
                  "        w.stats()  # waits for the clock queued before it\n"
                  "    else:\n"
                  "        w.connect()  # waits for a server to listen\n"
                  "    print('returned closed', w.closed, flush=True)\n"
                  "except rdmaps.Error as e:\n"
                  "    print('raised', e.code, 'closed', w.closed, flush=True)\n"
                  "s.stop()\n")
        for call in ("clock", "stats", "connect"):
            try:
                p = subprocess.run([sys.executable, "-c", script, TRANSPORT, call], capture_output=True, text=True,
                                   timeout=30)
            except subprocess.TimeoutExpired:
                self.fail(call + ": close() in a signal handler hung")
            self.assertEqual(p.returncode, 0, call + ": " + p.stderr)
            # stats() reads the counters once the clock ended, cancelled or not.
            self.assertIn("returned closed True" if call == "stats" else "raised cancelled closed True", p.stdout,
                          call + ": " + p.stderr)

    def test_exit_with_a_server_serving_in_a_daemon_thread(self):
        # The interpreter ends the daemon thread while it finalizes; an object
        # torn down then that gives the GIL away lets the thread run into it.
        code = ("import threading, time, rdmaps\n"
                "s = rdmaps.Server('127.0.0.1:0', transport='tcp', log_connections=False)\n"
                "threading.Thread(target=s.serve, daemon=True).start()\n"
                "time.sleep(0.2)\n"
                "class SlowToGo:\n"
                "    def __del__(self):\n"
                "        time.sleep(0.1)\n"
                "keep = SlowToGo()\n")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("terminate", p.stderr)

    def test_exit_with_a_daemon_thread_inside_a_worker_call(self):
        # CPython ends a daemon thread that takes the GIL back while the interpreter finalizes (pthread_exit, which
        # unwinds its stack); the worker took it back in a destructor, so the process aborted ("terminate called
        # without an active exception", rc 134) and the servers logged the worker as died, not left.
        code = ("import sys, threading, time, numpy as np, rdmaps\n"
                "address, transport, call, left_open = sys.argv[1:]\n"
                "class SlowToGo:  # finalization lasts past the thread's next look at the GIL (50 ms)\n"
                "    def __del__(self):\n"
                "        time.sleep(0.1)\n"
                "keep = SlowToGo()\n"
                "n = 2 if call == 'clock' else 1\n"
                "workers = [rdmaps.Worker(address, i, transport=transport, rule='sgd', staleness=0, timeout=30)\n"
                "           for i in range(n)]\n"
                "for w in workers:\n"
                "    w.declare('w', 1000); w.connect()\n"
                "if left_open == '1':\n"
                "    rdmaps._open_workers.clear()  # the library's own exit path, without the package's close()\n"
                "def call_in_a_thread():\n"
                "    try:\n"
                "        if call == 'clock':\n"
                "            workers[0].clock()  # bulk-synchronous: waits for worker 1, which never clocks\n"
                "        while True:\n"
                "            workers[0].stats()\n"
                "    except rdmaps.Error as e:\n"
                "        print('raised', e, flush=True)\n"
                "threading.Thread(target=call_in_a_thread, daemon=True).start()\n"
                "g = np.zeros(1000, np.float32)\n"
                "for _ in range(100 if call == 'stats' else 0):\n"
                "    workers[0].push('w', g); workers[0].clock(); workers[0].pull('w', g)\n")
        for call, workers in (("clock", 2), ("stats", 1)):
            for left_open in ("0", "1"):
                with self.subTest(call=call, left_open=left_open):
                    served = ServerThread(workers=workers, rule="sgd", staleness=0)
                    try:
                        p = subprocess.run([sys.executable, "-c", code, served.server.address, TRANSPORT, call,
                                            left_open], capture_output=True, text=True, timeout=60)
                        self.assertEqual(p.returncode, 0, p.stderr)
                        self.assertNotIn("terminate called", p.stderr)
                        if left_open == "0":  # closed at exit: each said goodbye
                            served.thread.join(timeout=10)
                            self.assertEqual(served.server.stats()["workers_left"], workers, p.stderr)
                    finally:
                        served.close()

    def test_auto_transport_sets_no_tcp_option_where_ucx_tls_has_no_tcp(self):
        # The tcp keepalive was set for the auto transport whatever UCX_TLS held, and UCX printed "UCX WARN invalid
        # configurations: KEEPIDLE=...,KEEPINTVL=...,KEEPCNT=4" in every process whose UCX_TLS had no tcp.
        code = ("import threading, numpy as np, rdmaps\n"
                "s = rdmaps.Server('127.0.0.1:0', transport='auto', log_connections=False)\n"
                "t = threading.Thread(target=s.serve)\n"
                "t.start()\n"
                "with rdmaps.Worker(s.address, 0, transport='auto', timeout=30) as w:\n"
                "    w.declare('w', 10); w.connect(); w.push('w', np.ones(10, np.float32))\n"
                "t.join()\n")
        p = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, UCX_TLS="posix,cma,self"),
                           capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("invalid configurations", p.stdout + p.stderr)  # UCX logs to stdout

    def test_a_server_off_loopback_needs_a_secret_or_insecure(self):
        saved = {k: os.environ.pop(k) for k in ("RDMAPS_SECRET", "RDMAPS_SECRET_FILE") if k in os.environ}
        try:
            with self.assertRaisesRegex(rdmaps.InvalidArgument, "without a shared secret.*the insecure option"):
                rdmaps.Server("0.0.0.0:0", transport="tcp")
            server = rdmaps.Server("0.0.0.0:0", transport="tcp", insecure=True)
            self.assertRegex(server.address, r":\d+$")
            server.stop()
            # bool("off") is True: these served off loopback without a secret.
            for said in ("off", "no", 0, None):
                with self.assertRaisesRegex(TypeError, r"rdmaps.Server: insecure=.* is not True or False"):
                    rdmaps.Server("0.0.0.0:0", transport="tcp", insecure=said)
            with self.assertRaisesRegex(TypeError, r"rdmaps.Server: stall_warning='soon' is not a number of seconds"):
                rdmaps.Server("127.0.0.1:0", transport="tcp", stall_warning="soon")
        finally:
            os.environ.update(saved)

    def test_a_launched_rank_needs_a_secret_on_loopback_too(self):
        # As the C++ programs' launched ranks: every user of the host reaches a loopback rendezvous, and without
        # a secret one registered a server of its own for the workers (rdmaps.torch.init took none).
        code = ("import rdmaps\n"
                "e0 = dict(RDMAPS_RANK='0', RDMAPS_WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT='1')\n"
                "try:\n"
                "    rdmaps._rdmaps._ServerDirectory(e0, 1, 5.0, [])\n"
                "except rdmaps.InvalidArgument as e:\n"
                "    print(e)\n")
        env = {k: v for k, v in os.environ.items() if k not in ("RDMAPS_SECRET", "RDMAPS_SECRET_FILE")}
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("its ranks need a shared secret", p.stdout)

    def test_a_rendezvous_logging_to_python_as_it_is_destroyed_does_not_hang(self):
        # Rank 0's rendezvous thread was joined with the GIL held while it logged a refused rank to Python,
        # which needs the GIL: the server rank hung at exit (del of the directory in rdmaps.torch.init).
        code = ("import logging, socket, sys, threading, time, rdmaps\n"
                "with socket.socket() as s:\n"
                "    s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]\n"
                "logging_now = threading.Event()\n"
                "class Slow(logging.Handler):\n"
                "    def emit(self, record):\n"
                "        if 'rendezvous: refused' in record.getMessage():\n"
                "            logging_now.set(); time.sleep(1)\n"
                "log = logging.getLogger('rdmaps.test'); log.addHandler(Slow()); rdmaps.log_to_python(log)\n"
                "e0 = dict(RDMAPS_RANK='0', RDMAPS_WORLD_SIZE='2', MASTER_ADDR='127.0.0.1', MASTER_PORT=str(port))\n"
                "d = rdmaps._rdmaps._ServerDirectory(e0, 1, 30.0, [])\n"
                "def wrong_world():\n"
                "    try:\n"
                "        rdmaps._rdmaps._ServerDirectory(dict(e0, RDMAPS_RANK='1', RDMAPS_WORLD_SIZE='3'), 1, 5.0, [])"
                ".exchange('')\n"
                "    except Exception:\n"
                "        pass\n"
                "threading.Thread(target=wrong_world, daemon=True).start()\n"
                "assert logging_now.wait(20), 'no refusal logged'\n"
                "del d\n"
                "print('destroyed', flush=True)\n")
        env = dict(os.environ, RDMAPS_SECRET=secrets.token_hex(32))  # a launched rank needs one
        try:
            p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=30, env=env)
        except subprocess.TimeoutExpired:
            self.fail("destroying the rendezvous while it logged to Python hung")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("destroyed", p.stdout)

    def test_library_log_lines_reach_python_logging(self):
        def a_worker_comes_and_goes():
            served = ServerThread(log_connections=True)
            worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, timeout=30)
            worker.declare("w", 10)
            worker.connect()
            worker.close()
            served.close()

        rdmaps.log_to_python("rdmaps.test")
        try:
            with self.assertLogs("rdmaps.test", level="INFO") as logs:
                a_worker_comes_and_goes()
            self.assertTrue(any("connected, push path" in line for line in logs.output), logs.output)
            with self.assertRaisesRegex(ValueError, "rdmaps.set_log_level: 'loud'"):
                rdmaps.set_log_level("loud")
            rdmaps.set_log_level(logging.WARNING)  # logging's levels are taken as their names
            with self.assertNoLogs("rdmaps.test", level="INFO"):  # "connected, push path" is info
                a_worker_comes_and_goes()
            # Said at import, as the programs say it at start: a worker process logs nothing to say it at.
            said = subprocess.run([sys.executable, "-c", "import rdmaps"], capture_output=True, text=True,
                                  env=dict(os.environ, RDMAPS_LOG_LEVEL="loud"), timeout=60)
            self.assertIn("RDMAPS_LOG_LEVEL", said.stderr)
            with self.assertRaisesRegex(TypeError, "rdmaps.set_log_level: 25 is not"):
                rdmaps.set_log_level(25)
            with self.assertRaisesRegex(TypeError, "rdmaps.log_to_python: 123 is not a logger name"):
                rdmaps.log_to_python(123)
        finally:
            rdmaps.log_to_python(None)
            rdmaps.set_log_level("info")

    def test_a_worker_thread_logging_to_python_holds_up_neither_its_drop_nor_a_new_handler(self):
        # The comm thread logs "reconnecting" (its server was killed) through
        # the Python handler, which takes the GIL inside the library's log
        # lock. "drop": the Worker dropped meanwhile joined that thread with
        # the GIL held; "swap": a new handler set with the GIL held waited
        # for the lock. Each hung for good.
        server = ("import rdmaps; s = rdmaps.Server('127.0.0.1:0', transport=%r, log_connections=False); "
                  "print(s.address, flush=True); s.serve()" % TRANSPORT)
        worker = ("import array, logging, os, signal, sys, time, rdmaps\n"
                  "logging.basicConfig(level=logging.INFO)\n"
                  "rdmaps.log_to_python('rdmaps.test')\n"
                  "w = rdmaps.Worker(sys.argv[1], 0, transport=%r, timeout=5, reconnect=2)\n"
                  "w.declare('x', 1000)\n"
                  "w.connect()\n"
                  "buf = array.array('f', [0.0] * 1000)\n"
                  "w.pull('x', buf)\n"
                  "os.kill(int(sys.argv[2]), signal.SIGKILL)\n"
                  "time.sleep(0.3)\n"
                  "if sys.argv[3] == 'swap':\n"
                  "    sys.setswitchinterval(5.0)  # this thread keeps the GIL while it runs\n"
                  "    w._submit_pull('x', buf.buffer_info()[0], 4000)\n"
                  "    # Long enough for the comm thread to see the server gone on a loaded machine (0.5 s\n"
                  "    # was not, in a clean-clone run: it logged after the swap, not through the handler).\n"
                  "    until = time.time() + 2.0\n"
                  "    while time.time() < until:  # the comm thread takes the log lock, then waits for the GIL\n"
                  "        pass\n"
                  "    rdmaps.log_to_python(None)\n"
                  "    sys.setswitchinterval(0.005)\n"
                  "else:\n"
                  "    w._submit_pull('x', buf.buffer_info()[0], 4000)\n"
                  "del w\n"
                  "print('dropped', flush=True)\n" % TRANSPORT)
        # "swap" is tried again (up to 3 times) where the comm thread logged only
        # after the swap: the case under test was not reached (a loaded machine).
        for mode, tries in (("drop", 1), ("swap", 3)):
            for _ in range(tries):
                served = subprocess.Popen([sys.executable, "-c", server], stdout=subprocess.PIPE, text=True)
                try:
                    address = served.stdout.readline().strip()
                    self.assertRegex(address, r"127\.0\.0\.1:\d+")
                    try:
                        p = subprocess.run([sys.executable, "-c", worker, address, str(served.pid), mode],
                                           capture_output=True, text=True, timeout=30)
                    except subprocess.TimeoutExpired:
                        self.fail(mode + ": the worker process hung")
                finally:
                    if served.poll() is None:
                        served.kill()
                    served.wait()
                    served.stdout.close()
                self.assertEqual(p.returncode, 0, mode + ": " + p.stderr)
                self.assertIn("dropped", p.stdout, mode)
                if "WARNING:rdmaps.test:rdmaps worker 0:" in p.stderr:
                    break
            self.assertIn("WARNING:rdmaps.test:rdmaps worker 0:", p.stderr, mode)  # through the Python handler

    def test_a_thread_that_holds_the_gil_and_logs_waits_for_no_lane_logging_to_python(self):
        # A Server resuming logs from its constructor, with the GIL held;
        # lanes logging "connected" and "left" meanwhile took the library's
        # log lock, then waited for the GIL inside the Python handler: each
        # waited for the other for good, within some 20 servers.
        script = ("import logging, sys, tempfile, threading, time, rdmaps\n"
                  "logging.getLogger('rdmaps.test').addHandler(logging.NullHandler())\n"
                  "logging.getLogger('rdmaps.test').propagate = False\n"
                  "rdmaps.log_to_python('rdmaps.test')\n"
                  "s = rdmaps.Server('127.0.0.1:0', transport=%r, exit_when_done=False)\n"
                  "serving = threading.Thread(target=s.serve)\n"
                  "serving.start()\n"
                  "done = threading.Event()\n"
                  "def churn():\n"
                  "    while not done.is_set():\n"
                  "        w = rdmaps.Worker(s.address, 0, transport=%r, timeout=5)\n"
                  "        w.declare('a', 4); w.connect(); w.close()\n"
                  "churning = threading.Thread(target=churn)\n"
                  "churning.start()\n"
                  "d = tempfile.mkdtemp()\n"
                  "for made in range(1, 41):\n"
                  "    rdmaps.Server('127.0.0.1:0', transport=%r, checkpoint_dir=d, resume=True)\n"
                  "done.set(); churning.join()\n"
                  "s.stop(); serving.join()\n"
                  "rdmaps.log_to_python(None)\n"
                  "print('made', made, flush=True)\n" % (TRANSPORT, TRANSPORT, TRANSPORT))
        try:
            p = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60)
        except subprocess.TimeoutExpired:
            self.fail("a thread holding the GIL and a lane logging to Python waited for each other")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("made 40", p.stdout)

    def test_info_reports_this_machine(self):
        report = rdmaps.info()
        self.assertIn("host", report["ucx"]["memory_types"])
        self.assertIn(report["gpu_path"], ("none", "staged", "direct"))
        self.assertEqual(report["gpu_path"] == "none", not report["cuda"]["devices"])

    def test_config_flags(self):
        self.assertEqual(rdmaps.config_flags({"lambda_": 2}, staleness=float("inf"), check_nan=True, eps=None),
                         ["--lambda", "2", "--staleness", "inf", "--check-nan", "on"])

    def test_a_timeout_outside_a_millisecond_to_1e9_seconds_is_refused(self):
        for bad in (0, -1, 0.0004, float("nan"), 2e9):
            with self.assertRaisesRegex(rdmaps.InvalidArgument, "Worker: timeout=.* is not a number of seconds from "
                                        r"0\.001 \(a millisecond\) to 1e9"):
                rdmaps.Worker("127.0.0.1:9", 0, transport=TRANSPORT, timeout=bad)
        rdmaps.Worker("127.0.0.1:9", 0, transport=TRANSPORT, timeout=0.001).close()

    def test_nobody_listening_is_a_connection_error(self):
        worker = rdmaps.Worker("127.0.0.1:9", 0, transport=TRANSPORT, timeout=1)
        worker.declare("w", 4)
        with self.assertRaises(ConnectionError) as ctx:
            worker.connect()
        self.assertIsInstance(ctx.exception, rdmaps.Error)
        self.assertIn("127.0.0.1:9", str(ctx.exception))
        worker.close()
        with self.assertRaisesRegex(rdmaps.InvalidArgument, "closed"):
            worker.clock()

    def test_server_gone_mid_run_is_reported(self):
        served = ServerThread()
        address = served.server.address
        worker = rdmaps.Worker(address, 0, transport=TRANSPORT, timeout=10)
        worker.declare("w", 16)
        worker.connect()
        served.close()
        del served  # the server's endpoints and memory go with it
        pushed = 0
        with self.assertRaises(rdmaps.Error) as ctx:
            for _ in range(50):  # the loss shows on the next operation that needs the server
                pushed += 1
                worker.push("w", np.ones(16, dtype=np.float32))
                worker.clock()
        self.assertIn(address.rpartition(":")[2], str(ctx.exception))
        # The counters stay readable after the failure (the next operation raises it again).
        stats = worker.stats()
        self.assertLessEqual(stats["pushes"] + stats["pushes_lost"], pushed, stats)
        with self.assertRaises(rdmaps.Error):
            worker.clock()
        worker.close()

    def test_a_stopped_server_is_reported_at_once(self):
        served = ServerThread(workers=2, rule="sgd")
        worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, rule="sgd", staleness=0, timeout=60)
        worker.declare("w", 10)
        worker.connect()
        worker.push("w", np.zeros(10, dtype=np.float32))
        served.close()  # stop() while worker 1 never came: worker 0's clock would wait for it
        start = time.monotonic()
        with self.assertRaises(rdmaps.PeerGone):
            worker.clock()
        self.assertLess(time.monotonic() - start, 20, "the worker waited out its timeout instead")
        worker.close()

    def test_a_push_that_failed_with_its_send_under_way_keeps_its_buffer(self):
        # A stopped server (SIGSTOP) reads none of a large push over tcp: the push fails with its send under
        # way, and that send reads the gradient until the worker is closed. The buffer was let go with the
        # exception, for the caller to resize or free while the send still read it.
        code = ("import rdmaps\n"
                "s = rdmaps.Server('127.0.0.1:0', workers=1, transport='tcp', log_connections=False)\n"
                "print(s.address, flush=True)\n"
                "s.serve()\n")
        server = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        worker = None
        try:
            address = server.stdout.readline().strip()
            # 5 s: it also bounds the connect and the first push, which a loaded machine may slow.
            worker = rdmaps.Worker(address, 0, transport="tcp", timeout=5)
            floats = 1 << 24  # 64 MiB: far more than the sockets hold
            worker.declare("w", floats)
            worker.connect()
            g = array.array("f", bytes(4 * floats))
            worker.push("w", g)  # taken while the server runs
            # Taken in whole: a pull's answer comes after every piece before it. Stopped with pieces left in
            # its inbox, the next push waited for a credit with no send of its own under way (a loaded run).
            worker.pull("w", array.array("f", bytes(4 * floats)))
            os.kill(server.pid, signal.SIGSTOP)
            with self.assertRaisesRegex(rdmaps.Error, "still under way"):
                for _ in range(8):  # until the sockets are full
                    worker.push("w", g)
            with self.assertRaises(BufferError):
                g.extend([0.0])
            os.kill(server.pid, signal.SIGCONT)
            worker.close()
            g.extend([0.0])  # let go with the client
        finally:
            if worker is not None:
                worker.close()
            server.kill()
            server.wait()
            server.stdout.close()

    def _idle_worker_of(self, served):
        worker = rdmaps.Worker(served.server.address, 0, transport=TRANSPORT, timeout=30)
        worker.declare("w", 16)
        worker.connect()
        worker.push("w", np.ones(16, dtype=np.float32))
        worker.clock()
        return worker

    # A worker that makes no call while its server stops, as a trainer of this
    # process waiting for serve() to return makes none, drives no UCX: nothing
    # of it acknowledges the server's closes. serve() waited 2 s for that over
    # tcp; now it returns at once (~0.01 s here), and the worker hears of it.
    def test_stop_beside_an_idle_worker_of_this_process_returns_at_once(self):
        served = ServerThread()
        worker = self._idle_worker_of(served)
        try:
            served.server.stop()
            served.thread.join(timeout=1.5)
            self.assertFalse(served.thread.is_alive(), "serve() waited for the idle worker to acknowledge")
            with self.assertRaisesRegex(rdmaps.PeerGone, "server 127.0.0.1:[0-9]+ closed the connection"):
                worker.clock()
        finally:
            worker.close()
            served.close()

    # A server whose serve() returned drives no UCX either: a worker leaving it
    # waited 5 s (its whole leave timeout) for the acknowledgement of its
    # closes. It knows the server closed its side, and no longer waits (~0.01 s).
    def test_a_worker_leaving_a_stopped_server_of_this_process_returns_at_once(self):
        served = ServerThread()
        worker = self._idle_worker_of(served)
        try:
            served.close()
            with self.assertRaisesRegex(rdmaps.PeerGone, "server 127.0.0.1:[0-9]+ closed the connection"):
                worker.clock()
            start = time.monotonic()
            worker.close()
            self.assertLess(time.monotonic() - start, 2.5, "close() waited for the stopped server to acknowledge")
        finally:
            worker.close()
            served.close()

    def test_serve_raises_where_the_final_checkpoint_could_not_be_written(self):
        # As the C API and rdmaps-server do: serve() returned normally, and an rdmaps.torch server rank
        # exited 0 with the trained model unsaved.
        import shutil
        import tempfile
        directory = tempfile.mkdtemp(prefix="rdmaps-py-unsaved-")
        server = rdmaps.Server("127.0.0.1:0", transport=TRANSPORT, log_connections=False, checkpoint_dir=directory)
        serving, raised = start_catching(server.serve)
        try:
            worker = rdmaps.Worker(server.address, 0, transport=TRANSPORT, timeout=20)
            worker.declare("w", 16)
            worker.connect()
            worker.push("w", np.ones(16, dtype=np.float32))
            worker.clock()
            shutil.rmtree(directory)
            open(directory, "w").close()  # nowhere to write the final checkpoint
            worker.close()
            serving.join(timeout=30)
            self.assertFalse(serving.is_alive(), "the server did not end with its worker")
            self.assertEqual([e.code for e in raised], ["io"], raised)
            self.assertIn("the trained model is not saved", str(raised[0]))
            self.assertTrue(server.stats()["final_checkpoint_failed"])
        finally:
            server.stop()
            serving.join(timeout=30)
            if os.path.isfile(directory):
                os.remove(directory)

    def test_a_worker_reconnects_to_a_server_restarted_from_its_checkpoint(self):
        import tempfile
        # The restart listens on the same port: one the kernel hands to no outgoing connection meanwhile.
        sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "common"))
        import free_ports
        address = "127.0.0.1:%d" % free_ports.first_free()
        directory = tempfile.mkdtemp(prefix="rdmaps-py-ckpt-")
        # log_connections also says each checkpoint written, and what it holds.
        code = ("import rdmaps, sys; rdmaps.Server(sys.argv[1], transport=%r, log_connections=True, rule='sgd', "
                "lr=0.5, checkpoint_dir=sys.argv[2], checkpoint_every=1, resume=True).serve()" % TRANSPORT)

        def serve():
            return subprocess.Popen([sys.executable, "-c", code, address, directory], stderr=subprocess.PIPE,
                                    text=True)

        server = serve()
        try:
            worker = None
            for _ in range(200):  # until it listens
                try:
                    worker = rdmaps.Worker(address, 0, transport=TRANSPORT, rule="sgd", lr=0.5, reconnect=20,
                                           timeout=20)
                    worker.declare("w", 16)
                    worker.connect()
                    break
                except rdmaps.Error:
                    worker = None
                    time.sleep(0.05)
            self.assertIsNotNone(worker, "the server process did not come up")
            w = np.ones(16, dtype=np.float32)
            worker.init("w", w)
            for _ in range(5):
                worker.push("w", np.ones(16, dtype=np.float32))
                worker.clock()
            worker.pull("w", w)  # every push is in, and in a checkpoint soon after (one per update)
            # Killed once that checkpoint is on disk (written by a thread of its own: a fixed 0.5 s was a guess).
            import queue
            lines, said = queue.Queue(), []
            threading.Thread(target=lambda out: [lines.put(x) for x in iter(out.readline, "")],
                             args=(server.stderr,), daemon=True).start()
            deadline = time.monotonic() + 30
            while not said or not re.search(r"checkpoint \d+ written to .*: 5 updates", said[-1]):
                try:
                    said.append(lines.get(timeout=max(0.0, deadline - time.monotonic())))
                except queue.Empty:
                    self.fail("no checkpoint of all 5 pushes in 30 s:\n" + "".join(said))
            server.kill()
            server.wait()
            server = serve()
            worker.pull("w", w)  # reconnects
            stats = worker.stats()
            self.assertEqual(stats["reconnects"], 1)
            self.assertEqual(stats["pushes_lost"], 0)
            np.testing.assert_array_equal(w, np.full(16, 1.0 - 5 * 0.5, dtype=np.float32))
            worker.push("w", np.ones(16, dtype=np.float32))
            worker.pull("w", w)
            np.testing.assert_array_equal(w, np.full(16, 1.0 - 6 * 0.5, dtype=np.float32))
            worker.close()
            _, err = server.communicate(timeout=20)
            self.assertIn("resumed from", err)
        finally:
            if server.poll() is None:
                server.kill()
            subprocess.run(["rm", "-rf", directory])


if __name__ == "__main__":
    unittest.main()
