import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks"))
import throughput  # noqa: E402


def test_a_busy_machine_is_named_not_timed_silently(monkeypatch):
    monkeypatch.setattr(throughput, "cpu_busy", lambda seconds=1.0: 0.93)
    busy, warnings = throughput.machine_load()
    assert busy == 0.93 and len(warnings) == 1 and "another process" in warnings[0]
    monkeypatch.setattr(throughput, "cpu_busy", lambda seconds=1.0: 0.02)
    assert throughput.machine_load()[1] == []


def test_cpu_busy_sees_a_spinning_process():
    import multiprocessing
    idle = throughput.cpu_busy(0.3)
    if idle is None:
        pytest.skip("no /proc/stat on this system")
    # one spinner on each core (a pinned test worker's children would otherwise share its one)
    cores = sorted(os.sched_getaffinity(0) | set(range(os.cpu_count() or 1))) \
        if hasattr(os, "sched_setaffinity") else [None] * (os.cpu_count() or 1)
    spinners = [multiprocessing.Process(target=_spin, args=(core,)) for core in cores]
    for p in spinners:
        p.start()
    try:
        busy = throughput.cpu_busy(0.5)
    finally:
        for p in spinners:
            p.terminate()
    assert busy > 0.6 and busy > idle


def _spin(core=None):
    if core is not None:
        os.sched_setaffinity(0, {core})
    while True:
        pass


def test_warm_up_runs_until_two_calls_agree(monkeypatch):
    durations = iter([5.0, 2.0, 1.0, 1.02, 9.0])
    calls = []
    clock = [0.0]

    def fn():
        calls.append(1)
        clock[0] += next(durations)
    monkeypatch.setattr(throughput.time, "perf_counter", lambda: clock[0])
    throughput.warm_up(fn)
    assert len(calls) == 4  # 5 s, 2 s, 1 s, then 1.02 s agrees with 1 s within 10%


def test_spread_is_relative_to_the_median():
    timings = throughput.Timings()
    assert timings.median("step", [1.0, 1.1, 0.9]) == pytest.approx(1.0)
    assert timings.spread["step"] == pytest.approx(0.2)


def test_bf16_is_labelled_emulated_where_the_cpu_has_no_bf16_instructions(monkeypatch, capsys):
    monkeypatch.setattr(throughput.utils, "bf16_autocast_reason", lambda device: None)
    assert throughput.bf16_kind() == "emulated"
    monkeypatch.setattr(throughput.utils, "bf16_autocast_reason", lambda device: "CPU has amx_bf16")
    assert throughput.bf16_kind() == "native"
    timings = throughput.Timings()
    timings.median("train_loop_bf16", [1.0, 1.0, 1.0])
    results = {"bf16": "emulated", "images_per_s": {"train_loop_bf16": 10.0},
               "hardware": {"matmul_bf16_gflops": 5.0}, "ratios": {"train_loop_bf16_vs_fp32": 0.2},
               "warnings": []}
    throughput.print_results(results, timings)
    out = capsys.readouterr().out
    assert "train_loop_bf16 (emulated)" in out and "matmul_bf16_gflops (emulated)" in out


def test_learning_margins_fails_naming_a_run_below_its_bound(monkeypatch, capsys):
    import learning_margins

    runs = {("off", 0): 0.97, ("off", 1): 0.93}  # seed 1 below MNIST's 95%
    monkeypatch.setattr(learning_margins, "measure", lambda *a, **k: runs)
    monkeypatch.setenv("DATA_ROOT", "unused")
    argv = ["--cases", "mnist_6000_1_epoch", "--seeds", "0,1", "--precisions", "off"]
    with pytest.raises(SystemExit, match=r"mnist_6000_1_epoch \(off, seed 1\): 93.0% <= 95%"):
        learning_margins.main(argv)
    assert "min 93.0 / median 95.0 / max 97.0" in capsys.readouterr().out
    runs[("off", 1)] = 0.96
    assert learning_margins.main(argv)["mnist_6000_1_epoch"] == runs
