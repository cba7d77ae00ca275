"""Runs checked chunks on a backend, and owns the stop-and-latch rules.

Rules (docs/safety.md): a chunk runs only if the safety layer accepts it as a whole; each
command is re-checked against the measured position right before it is sent; an abort
request, e-stop, runstop or any exception stops the backend and latches a fault, and no
later chunk runs until reset_for_new_task(). Dry-run plans and reports everything and
sends nothing that moves. With head tracking on, a chunk that ran to its end aims the head
camera at the gripper before it counts as done (robot.head).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .embodiment import EmbodimentConfig
from .head import HeadPose, HeadTrackingConfig
from .interface import JointState, RobotBackend
from .safety import SafeCommand, SafetyConfig, check_move, status_problem, validate_chunk

STATUSES = ("done", "aborted", "rejected", "failed", "dry_run")
ABORT_POLL_S = 0.02


@dataclass(frozen=True)
class ExecutionReport:
    status: str  # one of STATUSES
    reason: str  # '' when done or dry_run
    steps_executed: int
    commands: tuple[SafeCommand, ...]  # the whole plan (dry-run: what would have been sent)
    findings: tuple[str, ...]  # what the safety layer clipped, and why
    start: JointState | None
    end: JointState | None


class ChunkExecutor:
    """Execute one chunk at a time. Not re-entrant; estop() may be called from any thread."""

    def __init__(
        self,
        backend: RobotBackend,
        embodiment: EmbodimentConfig,
        safety: SafetyConfig,
        dry_run: bool = False,
        head: HeadTrackingConfig | None = None,
    ) -> None:
        self.backend = backend
        self.embodiment = embodiment
        self.safety = safety
        self.dry_run = dry_run
        self.head = head or HeadTrackingConfig()
        # re-entrant: a signal handler latches from the main thread, which may hold it already
        self._lock = threading.RLock()
        self._fault = ""
        self._abort = threading.Event()
        self._anchor: JointState | None = None

    @property
    def fault(self) -> str:
        """Why execution is latched off ('' when chunks may run)."""
        return self._fault

    def reset_for_new_task(self) -> None:
        """Clear a latched fault and the workspace anchor: the next chunk starts a new task."""
        with self._lock:
            self._fault = ""
            self._abort.clear()
            self._anchor = None

    def aim_head(self) -> HeadPose | None:
        """Aim the head camera at the gripper now (at start-up), if tracking is on.

        None when it is off, in dry-run or while a fault is latched; raises BackendError (or
        any backend failure) when the robot refuses, e.g. runstopped or not homed. Like
        execute(), never call it while a chunk runs."""
        if not self.head.track_gripper or self.dry_run or self._fault:
            return None
        return self._point_head_at_gripper()

    def _point_head_at_gripper(self) -> HeadPose:
        pose = self.head.pose_for(self.backend.status().joints)
        self.backend.point_head(pose.pan_rad, pose.tilt_rad)
        return pose

    def estop(self, reason: str = "e-stop") -> None:
        """Stop the backend now and latch, from any thread."""
        self._latch(reason)
        self._abort.set()
        self._stop()

    def execute(self, chunk: Any, should_abort: Callable[[], bool] | None = None) -> ExecutionReport:
        """Validate, then run (or, in dry-run, only plan) one chunk; never raises for a bad chunk.

        should_abort (e-stop, watchdog) is polled between steps and, from a helper thread,
        while a move is under way; it must be cheap and thread-safe.
        """
        if self._fault:
            return self._report(
                "rejected",
                f"execution is latched off ({self._fault}); send a new task",
                0,
                (),
                (),
                None,
                None,
            )
        try:
            status = self.backend.status()
        except Exception as exc:
            return self._fail("failed", f"could not read the robot status: {_describe(exc)}", 0, (), (), None)
        report = validate_chunk(chunk, status, self.embodiment, self.safety, self._anchor)
        start = status.joints if not status_problem(status, self.safety) else None
        if not report.ok:
            self._latch(f"chunk rejected: {report.reason}")
            return self._report("rejected", report.reason, 0, (), report.findings, start, start)
        if self._anchor is None:
            self._anchor = status.joints
        if self.dry_run:
            return self._report("dry_run", "", 0, report.commands, report.findings, start, start)
        return self._run(report.commands, report.findings, start, self._anchor, should_abort)

    def _run(
        self,
        commands: tuple[SafeCommand, ...],
        findings: tuple[str, ...],
        start: JointState | None,
        anchor: JointState,
        should_abort: Callable[[], bool] | None,
    ) -> ExecutionReport:
        done = threading.Event()
        watcher = None
        if should_abort is not None:
            watcher = threading.Thread(target=self._watch, args=(should_abort, done), daemon=True)
            watcher.start()
        executed = 0
        last_pct: float | None = None
        try:
            for i, cmd in enumerate(commands):
                if should_abort is not None and should_abort():
                    self._abort.set()
                if self._abort.is_set():
                    return self._fail(
                        "aborted",
                        f"aborted before step {i}: {self._fault or 'abort requested'}",
                        executed,
                        commands,
                        findings,
                        start,
                    )
                status = self.backend.status()
                problem = status_problem(status, self.safety)
                if problem:  # runstop pressed, homing lost, or a broken reading
                    return self._fail(
                        "aborted", f"stopped before step {i}: {problem}", executed, commands, findings, start
                    )
                problem = check_move(status.joints, cmd, anchor, self.safety)
                if problem:
                    return self._fail(
                        "failed", f"refused step {i}: {problem}", executed, commands, findings, start
                    )
                d = cmd.delta
                if d.lift_m or d.arm_m or d.base_m:
                    self.backend.move_by(d, cmd.timeout_s)
                if self._abort.is_set():  # an e-stop arrived while moving
                    return self._fail(
                        "aborted",
                        f"aborted during step {i}: {self._fault or 'abort requested'}",
                        executed,
                        commands,
                        findings,
                        start,
                    )
                if cmd.gripper_pct != last_pct:
                    self.backend.set_gripper(cmd.gripper_pct)
                    last_pct = cmd.gripper_pct
                executed += 1
            if self.head.track_gripper:
                if (should_abort is not None and should_abort()) or self._abort.is_set():
                    return self._fail(
                        "aborted",
                        f"aborted before aiming the head: {self._fault or 'abort requested'}",
                        executed,
                        commands,
                        findings,
                        start,
                    )
                pose = self._point_head_at_gripper()
                if pose.clipped:
                    findings = (*findings, f"head aim clipped to pan {pose.pan_rad:.2f}, tilt {pose.tilt_rad:.2f} rad: "
                                           "the gripper is off the image centre")
            if self._abort.is_set():  # an e-stop during the last step's gripper or the head's aim: not "done"
                return self._fail(
                    "aborted",
                    f"aborted after the last step: {self._fault or 'abort requested'}",
                    executed,
                    commands,
                    findings,
                    start,
                )
        except Exception as exc:
            if self._abort.is_set():  # the backend noticed our own e-stop: report the e-stop
                return self._fail(
                    "aborted",
                    f"aborted during step {executed}: {self._fault}",
                    executed,
                    commands,
                    findings,
                    start,
                )
            where = f"step {executed}" if executed < len(commands) else "aiming the head"
            return self._fail("failed", f"{where} failed: {_describe(exc)}", executed, commands, findings, start)
        except BaseException:  # KeyboardInterrupt, SystemExit: stop, latch, and let it propagate
            self._latch("interrupted")
            self._stop()
            raise
        finally:
            done.set()
            if watcher is not None:
                watcher.join()
        return self._report("done", "", executed, commands, findings, start, self._read_joints())

    def _watch(self, should_abort: Callable[[], bool], done: threading.Event) -> None:
        """Helper thread: stop the backend as soon as should_abort says so, even mid-move."""
        while not done.wait(ABORT_POLL_S):
            try:
                fire = should_abort()
            except Exception as exc:
                self._latch(f"should_abort raised {_describe(exc)}")
                fire = True
            if fire:
                self.estop(self._fault or "abort requested")
                return

    def _fail(
        self,
        kind: str,
        reason: str,
        executed: int,
        commands: tuple[SafeCommand, ...],
        findings: tuple[str, ...],
        start: JointState | None,
    ) -> ExecutionReport:
        """Stop, latch, and report; the end position is read after the stop."""
        self._latch(reason)
        self._stop()
        return self._report(kind, reason, executed, commands, findings, start, self._read_joints())

    def _latch(self, reason: str) -> None:
        with self._lock:
            if not self._fault:
                self._fault = reason

    def _stop(self) -> None:
        """Stopping never moves anything, so it happens in dry-run too."""
        with contextlib.suppress(Exception):  # stop() must never raise; the fault is latched anyway
            self.backend.stop()

    def _read_joints(self) -> JointState | None:
        try:
            return self.backend.status().joints
        except Exception:
            return None

    @staticmethod
    def _report(
        status: str,
        reason: str,
        executed: int,
        commands: tuple[SafeCommand, ...],
        findings: tuple[str, ...],
        start: JointState | None,
        end: JointState | None,
    ) -> ExecutionReport:
        return ExecutionReport(status, reason, executed, commands, findings, start, end)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
