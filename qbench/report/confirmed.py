"""The summary's speed-ups, checked: interleaved confirmations and machine load.

A pick's speed-up in the summary is a ratio of two cells' latencies measured minutes apart. Two
things say how far to trust it, both read from the store (a report never runs a model):
- the run's confirmation of the pair (qbench.confirm.picks): the two artifacts timed in
  interleaved rounds in one process; its median ratio and 95% interval are what the summary
  states as confirmed. A confirmation is used only where both cells' rows come from the run
  that confirmed them (a later re-measured cell is another artifact run, under another load);
- each cell's `load_other_cores`: where the pick and its reference were timed under loads more
  than LOAD_DIFFERENCE_CORES apart, the summary says so.
"""

from __future__ import annotations

from typing import Any

# Other processes' load (in CPUs' worth of time) that makes two timings not comparable. On the
# 2-core machines this project runs on, a quarter of a core busy elsewhere already changes
# turbo, caches and memory bandwidth by more than the 5-17% noise between runs (facts.md).
LOAD_DIFFERENCE_CORES = 0.25
# A confirmation whose one-sided p-value is above this does not show the pick faster.
CONFIRM_ALPHA = 0.05


def attach(summaries: list[Any], confirmations: dict[tuple[str, str], Any]) -> None:
    """Fill each summary pick's confirmed_* fields and confirmation text, and add a note where
    the pick and its reference were timed under different loads."""
    for summary in summaries:
        ref = summary.reference
        if ref is None:
            continue
        for role, pick in (("fastest", summary.fastest), ("within budget", summary.within_budget)):
            if pick is None or pick.cell_id == ref.cell_id:
                continue
            _confirm_one(pick, ref, confirmations.get((ref.cell_id, pick.cell_id)))
            note = load_note(role, pick, ref)
            if note and note not in summary.notes:
                summary.notes.append(note)


def _confirm_one(pick: Any, ref: Any, found: Any) -> None:
    if found is None:
        pick.confirmation = ("not confirmed: not timed against the reference in interleaved "
                             "rounds (qbench run does it unless --no-confirm)")  # fmt: skip
        return
    run_id, confirmation = found
    if pick.run_id != run_id or ref.run_id != run_id:
        pick.confirmation = (f"not confirmed: run {run_id} confirmed this pair, but a cell of it "
                             "was measured again since")  # fmt: skip
        return
    if confirmation.why_not:
        pick.confirmation = confirmation.why_not
        return
    pick.confirmed_speedup = confirmation.speedup
    pick.confirmed_ci_low = confirmation.speedup_ci_low
    pick.confirmed_ci_high = confirmation.speedup_ci_high
    faster = (confirmation.p_value is not None and confirmation.p_value <= CONFIRM_ALPHA
              and (confirmation.speedup_ci_low or 0) > 1)  # fmt: skip
    verdict = "faster" if faster else "NOT shown faster"
    pick.confirmation = (
        f"confirmed in {confirmation.rounds} interleaved rounds: "
        f"{confirmation.speedup:.2f}× [{confirmation.speedup_ci_low:.2f}, "
        f"{confirmation.speedup_ci_high:.2f}], {verdict} (one-sided Wilcoxon p = "
        f"{confirmation.p_value:.2g})"
    )


def load_note(role: str, pick: Any, ref: Any) -> str | None:
    """Why the cells' ratio of `pick` over `ref` is not comparable, or None."""
    a, b = ref.load_other_cores, pick.load_other_cores
    if a is None or b is None or abs(a - b) <= LOAD_DIFFERENCE_CORES:
        return None
    return (
        f"{role} {pick.method} on {pick.backend}: timed while other processes took "
        f"{b:.2f} CPUs, its fp32 reference while they took {a:.2f} CPUs: the cells' ratio "
        f"({pick.speedup:.2f}×) mixes two loads; trust the interleaved confirmation"
    )
