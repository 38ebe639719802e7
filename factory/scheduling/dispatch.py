"""The constraints every policy honours, applied to the policy's ranking of who should run now.

A policy says *who* it wants running (`ranked`, most important first) and why the others should
wait; `dispatch` decides who *can* run, in that order, and returns the decisions:

  * capacity and gang: a job starts only if all its workers are placed (`placement.FreeGpus`);
  * power budget: the running jobs' power (`num_gpus * power_w`) never exceeds the facility budget;
  * quotas: a team may always use its guaranteed GPUs. Beyond them it borrows idle GPUs, but only
    with preemptible jobs (a borrowed GPU must be reclaimable) or, for non-preemptible ones, from
    GPUs nobody is guaranteed. When a team within its guarantee has a job that does not fit, the
    borrowers' jobs are paused (latest ranked first) to make room: reclaim.
  * backfill: a job that does not fit does not block smaller ones behind it;
  * moves (`may_move`, off by default): a job of one worker that fits in the free GPUs' total but on no
    node (a gang of 8 on two nodes of 8 with 4 free on each) gets a node by moving running jobs to free
    GPUs on other nodes: each is paused at a checkpoint and resumed there at once, paying one resume
    overhead but not waiting (the fewest moves, on one of the `MOVE_SCAN_NODES` nodes nearest to room);
  * during a grid event, running jobs the power budget would pause are capped instead where a cap is
    enough (`power_caps.cap_before_pausing`).

Invariants:
  * Running jobs the policy did not rank are paused only if preemptible; a non-preemptible job is
    never paused, by any rule.
  * Victims of a preemption or reclaim, and moved jobs, are paused only if the job they make room for
    then starts; a moved job is started elsewhere in the same decisions (live, where a pause waits for a
    checkpoint, that start is refused and the next decision sees the job paused).
  * Cost is O(jobs ranked x GPUs per node) plus the victims examined; a job that cannot preempt
    anything costs O(1) beyond its placement attempt, and one that may move others at most
    `MOVE_SCAN_NODES` nodes' running jobs.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence

from factory.scheduling.model import Decisions, JobView, Pause, Phase, Snapshot, Start, Wait, WaitReason
from factory.scheduling.placement import FreeGpus, Placement
from factory.scheduling.power_caps import cap_before_pausing

Held = Mapping[str, tuple[WaitReason, str]]
VICTIM_SCAN = 1000  # preemptible jobs looked at for the node where a gang displaces the fewest
MOVE_SCAN_NODES = 16  # nodes nearest to room looked at for moves that give a job of one worker a node
MayPreempt = Callable[[JobView, JobView], bool]


def dispatch(
    snapshot: Snapshot,
    ranked: Sequence[JobView],
    held: Held,
    *,
    may_preempt: MayPreempt | None = None,
    admitted: Sequence[str] = (),
    infeasible: Sequence[tuple[str, str]] = (),
    may_cap: Callable[[JobView], bool] | None = None,
    may_move: MayPreempt | None = None,
) -> Decisions:
    """Start, keep or pause jobs so that `ranked` runs as far as the constraints allow.

    `held`: the reason for each job the policy does not want running now (price, priority).
    `may_preempt(job, victim)`: whether `job` may pause the running `victim` to make room; the
    caller guarantees it is monotone in the victim's rank (if it refuses the lowest-ranked running
    job, it refuses every other). `may_cap(job)`: whether a running job the policy keeps may run slower
    under a power cap during a grid event (None: any preemptible one; see `power_caps`).
    `may_move(job, mover)`: whether the running preemptible `mover` may be moved to another node (paused
    and resumed there at once) to give `job` room on one node (None: no job is moved).
    """
    state = _State(snapshot, ranked)
    pauses: list[Pause] = []
    for job in state.running:  # (in the snapshot's order)
        if job.job_id not in state.rank and job.preemptible:
            reason, detail = held.get(job.job_id, (WaitReason.PRIORITY, "not ranked by the policy"))
            pauses.append(Pause(job.job_id, reason, detail))
            state.release(job)
    pauses += state.enforce_power_budget()

    starts: list[Start] = []
    waits: list[Wait] = []
    preempting: set[str] = set()  # jobs started in room taken from others: their starts stand
    for job in ranked:
        if job.phase is Phase.RUNNING:
            continue
        blocked = state.quota_block(job)
        if blocked:
            waits.append(Wait(job.job_id, WaitReason.QUOTA, blocked))
            continue
        placement = state.fit(job)
        if placement is None and may_move is not None:
            moves = state.find_moves(job, may_move)
            for mover, to in moves:
                pauses.append(Pause(mover.job_id, WaitReason.CAPACITY,
                                    f"moved to {', '.join(node for node, _ in to)} to make room for job "
                                    f"{job.job_id} on one node"))
                starts.append(Start(mover.job_id, to))
                state.release(mover)
                state.hold(mover, to)
                preempting.add(mover.job_id)
            if moves:
                placement = state.fit(job)
                preempting.add(job.job_id)
        if placement is None:
            victims = state.find_victims(job, may_preempt)
            if victims is not None:
                for victim, why in victims:
                    pauses.append(Pause(victim.job_id, *why))
                    state.release(victim)
                placement = state.fit(job)
                preempting.add(job.job_id)
        if placement is None:
            waits.append(state.wait_for_room(job))
            continue
        state.hold(job, placement)
        starts.append(Start(job.job_id, placement))

    ranked_ids, running, reason_of = state.rank, Phase.RUNNING, held.get
    unranked = (WaitReason.PRIORITY, "not ranked by the policy")
    # (A comprehension and `_make`, not a loop of appends: every job of a long queue waits here.)
    waits += [Wait._make((job_id, *reason_of(job_id, unranked), None)) for job in snapshot.jobs
              if job.phase is not running and (job_id := job.job_id) not in ranked_ids]
    decisions = Decisions(starts=tuple(starts), pauses=tuple(pauses), waits=tuple(waits),
                          admitted=tuple(admitted), infeasible=tuple(infeasible))
    return cap_before_pausing(snapshot, decisions, may_cap, rank=state.rank, must_start=preempting)


class _State:
    """GPUs, power and team usage while a dispatch walks the ranking."""

    def __init__(self, snapshot: Snapshot, ranked: Sequence[JobView]) -> None:
        self.rank = {job.job_id: i for i, job in enumerate(ranked)}
        self.free = FreeGpus(snapshot.node_gpus, snapshot.free_gpus())
        budget_now_w = snapshot.budget_now_w()  # a grid event's target, while one lasts
        self.budget_w = budget_now_w if budget_now_w is not None else math.inf
        self.quotas = snapshot.quotas
        self.unguaranteed = snapshot.total_gpus - sum(snapshot.quotas.values())
        self.running = [job for job in snapshot.jobs if job.phase is Phase.RUNNING]
        self.power_w = sum(job.draw_w for job in self.running)
        self.team_gpus: Counter[str] = Counter()
        self.team_fixed_gpus: Counter[str] = Counter()  # non-preemptible jobs' GPUs per team
        for job in self.running:
            self._count(job, +1)
        self.released: set[str] = set()
        # Sorted once: a dispatch may look for victims for every one of 100,000 queued jobs.
        unranked = len(self.rank)
        self._movable_by_node: dict[str, list[JobView]] | None = None  # built on the first `find_moves`
        self._preemptible_by_rank = sorted((job for job in self.running if job.preemptible),
                                           key=lambda job: -self.rank.get(job.job_id, unranked))

    # -- bookkeeping -----------------------------------------------------------------------------

    def _count(self, job: JobView, sign: int) -> None:
        self.team_gpus[job.team] += sign * job.num_gpus
        if not job.preemptible:
            self.team_fixed_gpus[job.team] += sign * job.num_gpus

    def release(self, job: JobView) -> None:
        self.free.give_back(job.placement)
        self.power_w -= job.draw_w
        self._count(job, -1)
        self.released.add(job.job_id)

    def hold(self, job: JobView, placement: tuple[tuple[str, int], ...]) -> None:
        self.free.take(placement)
        self.power_w += job.draw_w
        self._count(job, +1)

    def guarantee(self, team: str) -> int:
        return self.quotas.get(team, 0)

    def _fixed_borrowed(self) -> int:
        return sum(max(0, gpus - self.guarantee(team)) for team, gpus in self.team_fixed_gpus.items())

    def _kept_by_rank(self) -> Iterator[JobView]:
        """Running preemptible jobs still held, lowest ranked first (lazily: callers stop early)."""
        return (job for job in self._preemptible_by_rank if job.job_id not in self.released)

    # -- rules -----------------------------------------------------------------------------------

    def enforce_power_budget(self) -> list[Pause]:
        """Pause the lowest-ranked preemptible running jobs while the budget is exceeded."""
        pauses = []
        for job in self._kept_by_rank():
            if self.power_w <= self.budget_w + 1e-9:
                break
            pauses.append(Pause(job.job_id, WaitReason.POWER_BUDGET,
                                f"running jobs draw {self.power_w / 1000:.1f} kW, over the budget of "
                                f"{self.budget_w / 1000:.1f} kW"))
            self.release(job)
        return pauses

    def quota_block(self, job: JobView) -> str | None:
        """Why quotas forbid starting `job` at all, or None."""
        if not self.quotas or job.preemptible:
            return None
        beyond = self.team_gpus[job.team] + job.num_gpus - self.guarantee(job.team)
        if beyond <= 0:
            return None
        if self._fixed_borrowed() + min(beyond, job.num_gpus) <= self.unguaranteed:
            return None
        return (f"team '{job.team or '(none)'}' would exceed its guarantee of {self.guarantee(job.team)} "
                f"GPUs, and a non-preemptible job may borrow only GPUs no team is guaranteed")

    def fit(self, job: JobView) -> tuple[tuple[str, int], ...] | None:
        if self.power_w + job.draw_w > self.budget_w + 1e-9:
            return None
        return self.free.place(job.num_gpus, job.worker_gpus)

    def _reclaims_for(self, job: JobView) -> bool:
        return bool(self.quotas) and self.team_gpus[job.team] + job.num_gpus <= self.guarantee(job.team)

    def find_victims(
        self, job: JobView, may_preempt: MayPreempt | None
    ) -> list[tuple[JobView, tuple[WaitReason, str]]] | None:
        """The fewest lowest-ranked running jobs whose pausing lets `job` start, or None."""
        reclaiming = self._reclaims_for(job)
        if may_preempt is None and not reclaiming:
            return None
        chosen: list[tuple[JobView, tuple[WaitReason, str]]] = []
        team_after = Counter(self.team_gpus)
        placement = None
        for victim in self._kept_by_rank():
            why: tuple[WaitReason, str] | None = None
            if reclaiming and victim.team != job.team and \
                    team_after[victim.team] - victim.num_gpus >= self.guarantee(victim.team):
                why = (WaitReason.QUOTA, f"its GPUs were reclaimed by team '{job.team}' (guaranteed "
                       f"{self.guarantee(job.team)} GPUs) for job {job.job_id}")
            elif may_preempt is not None and may_preempt(job, victim):
                why = _preempted_by(job)
            elif not reclaiming:
                break  # may_preempt is monotone: nobody ranked higher can be preempted either
            if why is None:
                continue
            chosen.append((victim, why))
            team_after[victim.team] -= victim.num_gpus
            self._set_free(victim, True)
            placement = self.fit(job)
            if placement is not None:
                break
        if placement is not None:
            chosen = self._needed(job, chosen)
        for victim, _ in chosen:  # undo the trial; the caller releases them for real
            self._set_free(victim, False)
        if placement is None or not chosen:
            return None
        if len(chosen) > 1 and not reclaiming and may_preempt is not None:
            fewer = self._fewest_on_one_node(job, may_preempt)
            if fewer is not None and len(fewer) < len(chosen):
                return [(victim, _preempted_by(job)) for victim in fewer]
        return chosen

    def _fewest_on_one_node(self, job: JobView, may_preempt: MayPreempt) -> list[JobView] | None:
        """For a job of one worker: the fewest victims on one node that make room for it there, or None.

        Each pause costs its job a resume, so a gang takes the node where it displaces the fewest jobs
        (lowest ranked first within a node; ties to the node of the lowest ranked victim). Only the first
        `VICTIM_SCAN` preemptible jobs, lowest ranked first, are looked at.
        """
        if job.num_gpus != job.worker_gpus:
            return None
        by_node: dict[str, list[JobView]] = {}
        for scanned, victim in enumerate(self._kept_by_rank()):
            if scanned >= VICTIM_SCAN or not may_preempt(job, victim):
                break  # may_preempt is monotone: nobody ranked higher can be preempted either
            if len(victim.placement) == 1:
                by_node.setdefault(victim.placement[0][0], []).append(victim)
        best: list[JobView] | None = None
        for node, victims in by_node.items():
            missing, taken = job.num_gpus - self.free[node], []
            for victim in victims:
                if missing <= 0 or (best is not None and len(taken) >= len(best)):
                    break
                taken.append(victim)
                missing -= victim.placement[0][1]
            if missing <= 0 and (best is None or len(taken) < len(best)):
                best = taken
        if best is None:
            return None
        for victim in best:  # the power budget too
            self._set_free(victim, True)
        fits = self.fit(job) is not None
        for victim in best:
            self._set_free(victim, False)
        return best if fits else None

    def find_moves(self, job: JobView, may_move: MayPreempt) -> list[tuple[JobView, Placement]]:
        """For a job of one worker that the free GPUs hold in total but no node does: running jobs to move
        to free GPUs on other nodes, and where, so that it fits on one; the fewest moves found (none: no
        such moves, or no need).

        Nodes nearest to room first (`FreeGpus.nodes_short_of`), at most `MOVE_SCAN_NODES` of them; on
        each, a mover that alone makes the room (the smallest) before the others (the largest first).
        """
        if job.num_gpus != job.worker_gpus or self.free.total < job.num_gpus or \
                self.power_w + job.draw_w > self.budget_w + 1e-9:
            return []
        if self._movable_by_node is None:
            self._movable_by_node = {}
            for running in self.running:
                if running.preemptible and len(running.placement) == 1:
                    self._movable_by_node.setdefault(running.placement[0][0], []).append(running)
        best: list[tuple[JobView, Placement]] = []
        for node in self.free.nodes_short_of(job.num_gpus, MOVE_SCAN_NODES):
            missing = job.num_gpus - self.free[node]
            movers = [mover for mover in self._movable_by_node.get(node, ())
                      if mover.job_id not in self.released and may_move(job, mover)]
            if sum(mover.num_gpus for mover in movers) < missing:
                continue
            movers.sort(key=lambda mover: (mover.num_gpus < missing,
                                           mover.num_gpus if mover.num_gpus >= missing else -mover.num_gpus))
            moves = self._moves_off(node, movers, missing)
            if moves and (not best or len(moves) < len(best)):
                best = moves
                if len(best) == 1:
                    break
        return best

    def _moves_off(self, node: str, movers: Sequence[JobView], missing: int
                   ) -> list[tuple[JobView, Placement]]:
        """Movers (in order) taken off `node` to free GPUs elsewhere until `missing` GPUs are free on it,
        with where each goes; none if they cannot all be placed. A trial: nothing changes."""
        blocked = ((node, self.free[node]),)  # its free GPUs are no place for a mover
        self.free.take(blocked)
        moves: list[tuple[JobView, Placement]] = []
        for mover in movers:
            if missing <= 0:
                break
            to = self.free.place(mover.num_gpus, mover.worker_gpus)
            if to is not None:
                self.free.take(to)
                moves.append((mover, to))
                missing -= mover.num_gpus
        for _, to in moves:
            self.free.give_back(to)
        self.free.give_back(blocked)
        return moves if missing <= 0 else []

    def _needed(self, job: JobView, chosen: list[tuple[JobView, tuple[WaitReason, str]]]
                ) -> list[tuple[JobView, tuple[WaitReason, str]]]:
        """The victims `job` still needs, the highest ranked given back first (all of them released now).

        Lowest ranked first is the order to free GPUs in, but a gang needs them on one node: victims on
        other nodes freed nothing it can use, and each pause costs its job a resume. A victim `job` still
        fits without is kept running.
        """
        needed = []
        for victim, why in reversed(chosen):
            self._set_free(victim, False)
            if self.fit(job) is None:
                self._set_free(victim, True)
                needed.append((victim, why))
        needed.reverse()
        return needed

    def _set_free(self, victim: JobView, free: bool) -> None:
        """A trial: count a running job's GPUs and watts as free (paused), or as held again."""
        if free:
            self.free.give_back(victim.placement)
            self.power_w -= victim.draw_w
        else:
            self.free.take(victim.placement)
            self.power_w += victim.draw_w

    def wait_for_room(self, job: JobView) -> Wait:
        if self.power_w + job.draw_w > self.budget_w + 1e-9:
            return Wait(job.job_id, WaitReason.POWER_BUDGET,
                        f"needs {job.draw_w / 1000:.1f} kW; "
                        f"{max(0.0, self.budget_w - self.power_w) / 1000:.1f} "
                        f"kW of the {self.budget_w / 1000:.1f} kW budget is free")
        return Wait(job.job_id, WaitReason.CAPACITY,
                    f"needs {job.num_gpus} GPUs ({job.worker_gpus} per worker); {self.free.total} free")


def _preempted_by(job: JobView) -> tuple[WaitReason, str]:
    """Why a job paused to make room for `job` waits."""
    return WaitReason.PRIORITY, f"preempted by job {job.job_id} of higher priority"
