"""How the package's ROS executables start, spin and stop (``localize_node``, ``pose_graph_node``).

Signals: SIGINT (Ctrl-C, sent by a terminal to the whole process group, so a node under
``ros2 launch`` gets it from the terminal *and* from launch) and SIGTERM (``kill``,
systemd, launch's escalation) only set a stop flag. rclpy's own handlers are off
(``SignalHandlerOptions.NO``): they would shut the context down under a running
executor (``RCLError: context is not valid``) and let a second SIGINT raise
``KeyboardInterrupt`` inside the clean-up. The handlers are installed before the heavy
imports (rclpy, torch); a signal while the node is still starting (importing, exporting
the model for a runtime, loading a map) ends the process at once with status 0, since
nothing can have changed yet.

The main loop spins a ``MultiThreadedExecutor`` (services and timers in their own
callback groups never wait behind each other; :func:`started_executor` says why it is
a subclass) in short ``spin_once`` slices, checking the flag; on stop it calls the
node's ``shutdown()`` (stop threads, final saves), then destroys the node and the context. Exit status: 0 after a signal or a normal end, 2
when the node cannot start (one line on stderr naming the problem, never a traceback).

Under ``ros2 launch`` the node also stops cleanly when launch is killed by SIGTERM alone
(upstream ros2/launch#666 leaves its nodes running): see :func:`_stop_with_launch_parent`.

"Ready" is logged by :func:`run` after the executor exists, so a supervisor that waits
for it and then signals the node always finds a valid context.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["StartupError", "run", "started_executor"]

_SPIN_SLICE_S = 0.1
#: How long the executor waits for a dispatched callback to start before it looks for more work.
_START_WAIT_S = 0.05


class StartupError(Exception):
    """The node cannot start (bad parameter, model or map); the message says why."""


def run(
    program: str,
    argv: list[str],
    make_node: Callable[[Any], Any],
    usage: Callable[[], str],
    prepare_args: Callable[[list[str]], list[str]] | None = None,
    threads: int = 4,
) -> int:
    """Run a node until SIGINT/SIGTERM. ``make_node(context)`` builds it (may raise StartupError).

    ``usage()`` is printed for ``--help``; ``prepare_args`` may add ROS arguments (e.g. a
    default params file) before ``rclpy.init``.
    """
    stop = _Stop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for s in signals:
        signal.signal(s, stop.on_signal)
    _stop_with_launch_parent()
    try:
        return _run(program, argv, make_node, usage, prepare_args, threads, stop)
    finally:
        # The node is shut down: a further signal (the second Ctrl-C a launch-started node
        # gets) must neither raise KeyboardInterrupt in atexit finalizers nor kill the process
        # by the default disposition, which Python restores for its own handlers at exit.
        # Ignored signals stay ignored through finalization.
        for s in signals:
            signal.signal(s, signal.SIG_IGN)


def _stop_with_launch_parent() -> None:
    """Under ``ros2 launch``, get SIGTERM (a clean stop) when launch itself dies.

    ``ros2 launch`` killed by SIGTERM exits without stopping its nodes (ros2/launch#666), so
    they would run on as orphans. When the parent process is ``ros2 launch`` (Linux only,
    read from /proc), ask the kernel for SIGTERM on the parent's death (PR_SET_PDEATHSIG).
    Started any other way (a shell, systemd, a test) the node is left alone.
    """
    parent = os.getppid()
    try:
        argv = Path(f"/proc/{parent}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return
    if b"launch" not in argv or not any(a.endswith(b"ros2") for a in argv):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() != parent:  # launch died before the request took effect
        os.kill(os.getpid(), signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class _Stop(threading.Event):
    """The stop flag. While the node is still starting there is nothing to save or shut down
    (no map has changed, exports are written atomically), so a signal then ends the process at
    once with status 0 instead of waiting for a model export or a large map load to finish."""

    def __init__(self) -> None:
        super().__init__()
        self.starting = True

    def on_signal(self, signum: int, frame: object) -> None:
        self.set()
        if self.starting:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(0)


def _run(
    program: str,
    argv: list[str],
    make_node: Callable[[Any], Any],
    usage: Callable[[], str],
    prepare_args: Callable[[list[str]], list[str]] | None,
    threads: int,
    stop: _Stop,
) -> int:
    import rclpy
    from rclpy.executors import ExternalShutdownException
    from rclpy.signals import SignalHandlerOptions
    from rclpy.utilities import remove_ros_args

    extra = remove_ros_args(argv)[1:]
    if extra:
        if extra[0] in ("-h", "--help"):
            print(usage())
            return 0
        print(f"{program}: error: unexpected arguments {extra} (use --ros-args)", file=sys.stderr)
        return 2
    if prepare_args is not None:
        argv = prepare_args(argv)
    context = rclpy.context.Context()
    try:
        rclpy.init(args=argv, context=context, signal_handler_options=SignalHandlerOptions.NO)
    except Exception as exc:  # bad --ros-args, unreadable params file
        print(f"{program}: error: cannot initialise ROS: {exc}", file=sys.stderr)
        return 2
    node = None
    executor = None
    try:
        try:
            node = make_node(context)
        except StartupError as exc:
            print(f"{program}: error: {exc}", file=sys.stderr)
            return 2
        executor = started_executor()(num_threads=threads, context=context)
        executor.add_node(node)
        stop.starting = False  # from here on a signal means a clean shutdown (threads, final saves)
        if stop.is_set():
            return 0
        node.get_logger().info(node.ready_message())
        try:
            while not stop.is_set() and context.ok():
                executor.spin_once(timeout_sec=_SPIN_SLICE_S)
        except ExternalShutdownException:
            pass
        return 0
    finally:
        if node is not None:
            try:
                node.shutdown()
            finally:
                if executor is not None:
                    executor.shutdown(timeout_sec=5.0)
                node.destroy_node()
        context.try_shutdown()


def started_executor() -> type[Any]:
    """rclpy's MultiThreadedExecutor, letting each dispatched callback start (rclpy is
    imported here, after the signal handlers, as everywhere in this module).

    rclpy's MultiThreadedExecutor (Humble to Jazzy; ros2/rclpy#1452, fixed upstream in
    #1547) hands a callback to its thread pool and immediately looks for work again; a task
    that the pool has not started yet counts as ready, so the spinning thread hands it over
    again and again, holding the GIL the pool thread needs to start it. Measured in the
    node at 30 Hz images on 2 cores (py-spy --gil): the executor thread held the GIL 54 % of
    the time, starving the worker stages. Waiting (GIL released) until the previous callback
    has started, or ``_START_WAIT_S`` when the pool is full, removes the spin and keeps the
    callback groups concurrent. Only public API is used (``wait_for_ready_callbacks``,
    ``Task.executing``/``done``), so it holds for every rclpy that has them.
    """

    from rclpy.executors import MultiThreadedExecutor

    class _StartedExecutor(MultiThreadedExecutor):
        _last_task: Any = None

        def wait_for_ready_callbacks(self, *args: Any, **kwargs: Any) -> Any:
            last = self._last_task
            if last is not None:
                deadline = time.monotonic() + _START_WAIT_S
                while not (last.executing() or last.done()) and time.monotonic() < deadline:
                    time.sleep(0.0002)
            found = super().wait_for_ready_callbacks(*args, **kwargs)
            self._last_task = found[0]
            return found

    return _StartedExecutor
