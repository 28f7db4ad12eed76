"""Where the runs of the plan execute: serially in this process, on N local worker
processes (one GPU each, or the CPU cores divided between them), or as submitit jobs (Slurm,
or its local executor). Every launcher gives the same outcomes."""

import os
import sys
import time

import utils
from run_contract import Outcome
from study.execution import _tail, call, finish, launch_argv, prepare


def _eta(runs, todo, elapsed):
    """Minutes left at this invocation's pace (cost done per second so far): the cost of the
    runs in `todo` (the names to execute) not reached yet. A resumed pipeline's pending runs
    that are up to date on disk are not in it, and cost nothing."""
    done_cost = sum(r.cost for r in runs if r.status == Outcome.DONE)
    rest = sum(r.cost for r in runs if r.status == Outcome.PENDING and r.name in todo)
    if not done_cost:
        return "unknown"
    return f"{rest * elapsed / done_cost / 60:.0f} min"


def _announce_start(run, i, total, start, runs, todo):
    print(f"\n=== [{i}/{total}] {run.script} {run.name} | elapsed {(time.time() - start) / 60:.1f} min"
          f" | estimated left {_eta(runs, todo, time.time() - start)}\n    {run.command}", flush=True)


def _announce_end(run):
    print(f"=== {run.name}: {run.status}{': ' + run.reason if run.reason else ''} "
          f"({run.seconds:.0f}s)", flush=True)
    if run.status == Outcome.FAILED:
        print(f"FAILED: {run.name}\n{run.error_tail or run.reason}", file=sys.stderr, flush=True)


def run_serial(runs, by_name, force, todo):
    """Every run in matrix order, in this process: the output streams to the terminal. `todo`
    names the runs expected to execute (the time left counts them)."""
    start = time.time()
    for i, run in enumerate(runs, 1):
        if run.status != Outcome.PENDING:
            continue
        if not prepare(run, by_name, force):
            _announce_end(run)
            continue
        _announce_start(run, i, len(runs), start, runs, todo)
        t0 = time.time()
        outcome = call(run.script, launch_argv(run, force))
        finish(run, outcome, time.time() - t0)
        _announce_end(run)


# ----------------------------------------------------------------------------- parallel

def _log_path(log_dir, name):
    return os.path.join(log_dir, f"{name}.log")


def call_logged(script, argv, log, threads=None):
    """`call` with the run's output in `log` (parallel runs would interleave on a terminal);
    `threads` caps torch's CPU threads (processes sharing cores must divide them)."""
    import contextlib

    import torch

    if threads:
        torch.set_num_threads(threads)
    os.makedirs(os.path.dirname(log), exist_ok=True)
    with open(log, "a") as f, contextlib.redirect_stdout(f), contextlib.redirect_stderr(f):
        print(f"\n$ {utils.command_line(script + '.py', argv)}", flush=True)
        return call(script, argv)


def _worker_init(slots, gpus):
    """Pin one worker process to one GPU (before torch touches CUDA), round robin."""
    slot = slots.get()
    if gpus:
        os.environ["CUDA_VISIBLE_DEVICES"] = str(gpus[slot % len(gpus)])


def _threads_per_job(jobs):
    """Torch CPU threads for each of `jobs` runs sharing the cores this process may use."""
    return max(1, utils.usable_cpus() // jobs)


def _visible_gpus():
    """The GPU indices this machine offers, read without initialising CUDA in this process."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [g for g in visible.split(",") if g.strip()]
    import torch

    return [str(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []


class ProcessBackend:
    """N worker processes on this machine: one GPU each where there are GPUs, else the CPU
    cores divided between them."""

    def __init__(self, jobs, device):
        import concurrent.futures
        import multiprocessing

        context = multiprocessing.get_context("spawn")  # CUDA and OpenMP do not survive fork
        gpus = _visible_gpus() if device in ("auto", "cuda") else []
        self.threads = _threads_per_job(jobs)
        self.manager = context.Manager()
        slots = self.manager.Queue()
        for i in range(jobs):
            slots.put(i)
        self.pool = concurrent.futures.ProcessPoolExecutor(
            jobs, mp_context=context, initializer=_worker_init, initargs=(slots, gpus))
        self.where = (f"{jobs} processes, one GPU each ({', '.join(gpus)})" if gpus else
                      f"{jobs} processes with {self.threads} CPU threads each")

    def submit(self, run, argv, log):
        return self.pool.submit(call_logged, run.script, argv, log, self.threads)

    @staticmethod
    def outcome(handle):
        try:
            return handle.result()
        except Exception as exc:  # the worker process itself died
            return Outcome.FAILED, f"worker process: {type(exc).__name__}: {exc}", ""

    def close(self):
        self.pool.shutdown(cancel_futures=True)  # on Ctrl-C, runs not yet started never start
        self.manager.shutdown()


class SubmititBackend:
    """Each run a job through submitit: a Slurm cluster, or its local executor (the same
    job files and logs, on this machine) for testing."""

    def __init__(self, args, jobs):
        import submitit

        folder = os.path.join(args.checkpoints, "submitit", "%j")
        if args.launcher == "slurm":
            try:
                self.executor = submitit.AutoExecutor(folder=folder, cluster="slurm")
            except RuntimeError as exc:  # no srun / sbatch on this machine
                raise SystemExit(f"error: --launcher slurm: {exc} Run the pipeline on the "
                                 "cluster's login node, or use --launcher local.")
            params = {"timeout_min": args.slurm_timeout_min,
                      "cpus_per_task": args.slurm_cpus, "gpus_per_node": args.slurm_gpus,
                      "nodes": 1, "tasks_per_node": 1, "name": "cnn-robustness"}
            if args.slurm_partition:
                params["slurm_partition"] = args.slurm_partition
            self.executor.update_parameters(**params)
            self.threads = args.slurm_cpus
        else:
            self.executor = submitit.LocalExecutor(folder=folder)
            self.threads = _threads_per_job(jobs)
            self.executor.update_parameters(timeout_min=args.slurm_timeout_min)
        self.where = f"submitit {args.launcher} jobs, logs in {os.path.dirname(folder)}"

    def submit(self, run, argv, log):
        return self.executor.submit(call_logged, run.script, argv, log, self.threads)

    @staticmethod
    def outcome(job):
        try:
            return job.result()
        except Exception as exc:  # the job died (killed, timed out, node failure)
            return Outcome.FAILED, f"job {job.job_id}: {type(exc).__name__}: {str(exc)[-500:]}", _tail(str(exc))

    def close(self):
        pass


def run_parallel(runs, by_name, force, todo, backend, jobs, log_dir):
    """Runs whose inputs are ready start as soon as a slot is free; each run's output goes to
    log_dir/<name>.log. Outcomes are the same as run_serial's."""
    print(f"running on {backend.where}; logs in {log_dir}/", flush=True)
    pending = [r for r in runs if r.status == Outcome.PENDING]
    running, start = {}, time.time()
    try:
        while pending or running:
            progressed = False
            for run in list(pending):
                if len(running) >= jobs:
                    break
                if any(by_name[n].status in (Outcome.PENDING, Outcome.RUNNING) for n in run.needs_all):
                    continue
                pending.remove(run)
                progressed = True
                if not prepare(run, by_name, force):
                    _announce_end(run)
                    continue
                _announce_start(run, len(runs) - len(pending), len(runs), start, runs, todo)
                run.status = Outcome.RUNNING
                running[run.name] = (run, backend.submit(run, launch_argv(run, force),
                                                         _log_path(log_dir, run.name)), time.time())
            for name, (run, handle, t0) in list(running.items()):
                if handle.done():  # a concurrent.futures Future and a submitit Job alike
                    finish(run, backend.outcome(handle), time.time() - t0)
                    del running[name]
                    progressed = True
                    _announce_end(run)
            if not progressed:
                time.sleep(0.5)
    finally:
        backend.close()


def launch(args, runs, by_name, todo):
    """Execute the pending runs: serially in this process, or through a backend. `todo` names
    the runs expected to execute (not up to date on disk, their data there)."""
    if args.launcher == "local" and args.jobs == 1:
        run_serial(runs, by_name, args.force, todo)
        return
    backend = (ProcessBackend(args.jobs, args.device) if args.launcher == "local"
               else SubmititBackend(args, args.jobs))
    run_parallel(runs, by_name, args.force, todo, backend, args.jobs, os.path.join(args.checkpoints, "logs"))
