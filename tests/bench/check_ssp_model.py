#!/usr/bin/env python3
"""bench/ssp_model.py against closed forms: BSP (s = 0) waits for the slowest
of N each clock, 1 + (F - 1)(1 - (1 - 1/N)^N); async runs at the mean step,
1 + (F - 1)/N; and a looser bound never runs slower."""
import importlib.util
import pathlib
import sys

path = pathlib.Path(sys.argv[1])
spec = importlib.util.spec_from_file_location("ssp_model", path)
model = importlib.util.module_from_spec(spec)
spec.loader.exec_module(model)

failures = []
for workers, factor in ((4, 4.0), (8, 3.0)):
    p = 1.0 / workers
    bsp = model.time_per_clock(0, workers, factor, 20000, 1)
    free = model.time_per_clock(None, workers, factor, 20000, 1)
    want_bsp = 1 + (factor - 1) * (1 - (1 - p) ** workers)
    want_free = 1 + (factor - 1) * p
    if abs(bsp / want_bsp - 1) > 0.02:
        failures.append(f"N={workers} F={factor}: BSP {bsp:.3f} per clock, closed form {want_bsp:.3f}")
    if abs(free / want_free - 1) > 0.02:
        failures.append(f"N={workers} F={factor}: async {free:.3f} per clock, closed form {want_free:.3f}")
    times = [model.time_per_clock(s, workers, factor, 5000, 1) for s in (0, 1, 3, 8)]
    if any(b > a + 1e-9 for a, b in zip(times, times[1:])) or times[-1] < free * 0.999:
        failures.append(f"N={workers} F={factor}: bounds 0, 1, 3, 8 gave {times}, async {free:.3f}")
for f in failures:
    print("check_ssp_model:", f, file=sys.stderr)
sys.exit(1 if failures else 0)
