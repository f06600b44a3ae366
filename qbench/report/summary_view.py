"""The summary (report.summary) as text lines for `qbench run` and as the report's first
section."""

from __future__ import annotations

from typing import Any

from qbench.report.fmt import DASH, esc
from qbench.report.summary import ModelSummary, Pick

METRIC_NAME = {
    "top1": "top-1",
    "fp32_agreement": "agreement with fp32",
    # outputs of one value per input: argmax agreement cannot see their error
    "fp32_within_tol": "outputs within tolerance of fp32",
}


def metric_name(s: ModelSummary) -> str:
    """What judged the model's budget, in words ("accuracy" where nothing was measured)."""
    return METRIC_NAME.get(s.metric or "", s.metric or "accuracy")


def _points(value: float | None) -> str:
    return DASH if value is None else f"{value * 100:+.1f}"


def _change(pick: Pick, reference: float | None) -> str:
    """The accuracy change in points with the cell's interval shifted alike: "-0.5 [-1.8, +0.6]"."""
    if pick.accuracy_change is None or reference is None:
        return DASH
    text = _points(pick.accuracy_change)
    if pick.change_ci_low is not None and pick.change_ci_high is not None:
        # paired against fp32 on the same inputs: its own interval
        return text + f" [{_points(pick.change_ci_low)}, {_points(pick.change_ci_high)}]"
    if pick.accuracy_ci_low is not None and pick.accuracy_ci_high is not None:
        text += f" [{_points(pick.accuracy_ci_low - reference)}, "
        text += f"{_points(pick.accuracy_ci_high - reference)}]"
    return text


def _speedup(pick: Pick) -> str:
    """The cells' ratio, and what timing the pair in interleaved rounds showed of it."""
    if pick.speedup is None:
        return DASH
    text = f"{pick.speedup:.2f}×"
    if pick.confirmed_speedup is not None:
        text += (f" (interleaved {pick.confirmed_speedup:.2f}× [{pick.confirmed_ci_low:.2f}, "
                 f"{pick.confirmed_ci_high:.2f}])")  # fmt: skip
    elif pick.confirmation:
        text += " (not confirmed)"
    return text


def _confirmation(pick: Pick) -> str:
    if not pick.confirmation:
        return ""
    return f'<span class="ci confirmation">{esc(pick.confirmation)}</span>'


def _mb(pick: Pick) -> str:
    return DASH if pick.artifact_bytes is None else f"{pick.artifact_bytes / 1e6:.1f} MB"


def budget_text(s: ModelSummary) -> str:
    points = s.budget * 100
    return (f"{points:g} point{'' if points == 1 else 's'} below fp32 at the 95% lower bound, "
            f"output SQNR at least {s.sqnr_floor_db:g} dB")  # fmt: skip


def text_lines(summaries: list[ModelSummary]) -> list[str]:
    """What `qbench run` prints at the end: two lines per model and device, the first saying
    which metric judged the model."""
    lines = []
    for s in summaries:
        ref = s.reference_accuracy
        metric = metric_name(s)
        head = f"{s.model} on {s.device} (judged on {metric if s.metric else 'nothing'})"
        if s.fastest is None:
            lines.append(f"  {head}: no native ok cell")
            continue
        base = (f"best fp32 {s.reference.backend} {s.reference.ms_per_input:.3f} ms"
                if s.reference else "no fp32 cell")  # fmt: skip
        lines.append(
            f"  {head}: fastest {s.fastest.configuration()}: {_speedup(s.fastest)} vs {base}, "
            f"{metric} {_change(s.fastest, ref)} pt, {_mb(s.fastest)}"
        )
        if s.within_budget is not None:
            lines.append(
                f"    within budget ({budget_text(s)}): {s.within_budget.configuration()}: "
                f"{_speedup(s.within_budget)}, {metric} {_change(s.within_budget, ref)} pt, "
                f"{_mb(s.within_budget)}"
            )
        for role, pick in (("fastest", s.fastest), ("within budget", s.within_budget)):
            if pick is not None and pick.confirmation:
                lines.append(f"    {role}: {pick.confirmation}")
        for note in s.notes:
            lines.append(f"    ({note})")
    return lines


def summary_section(summaries: list[ModelSummary]) -> str:
    """The report's first section: per model and device, the fastest configuration, the
    fastest within the accuracy budget and the best fp32 they are compared with."""
    if not summaries:
        return ""
    body = []
    for s in summaries:
        ref = s.reference_accuracy
        metric = metric_name(s)
        judged = f"judged on {metric}" if s.metric else "no accuracy measured"
        picks = (("fastest", s.fastest), ("within budget", s.within_budget),
                 ("best fp32", s.reference))  # fmt: skip
        first = True
        for role, pick in picks:
            if pick is None:
                continue
            acc = DASH if pick.accuracy is None else f"{pick.accuracy:.3f}"
            if pick.accuracy_ci_low is not None and pick.accuracy_ci_high is not None:
                acc += f" [{pick.accuracy_ci_low:.3f}–{pick.accuracy_ci_high:.3f}]"
            lead = (f'<td rowspan="{sum(p is not None for _, p in picks)}"><b>{esc(s.model)}</b>'
                    f"<br>{esc(s.device)}<br><span class='muted metric'>{esc(judged)}</span></td>"
                    if first else "")  # fmt: skip
            first = False
            role_key = role.replace(" ", "-")
            body.append(
                f'<tr class="pick-{role_key}" data-model="{esc(s.model)}" '
                f'data-device="{esc(s.device)}">{lead}<td>{esc(role)}</td>'
                f"<td><code>{esc(pick.method)}</code> on <code>{esc(pick.backend)}</code>, "
                f"{pick.threads} thr, batch {pick.batch}</td>"
                f"<td>{esc(_speedup(pick))}{_confirmation(pick)}</td>"
                f"<td>{pick.ms_per_input:.3f}</td>"
                f"<td>{esc(acc)}</td><td>{esc(_change(pick, ref))}</td>"
                f"<td>{esc(_mb(pick))}</td></tr>"
            )
        notes = list(s.notes)
        if s.within_budget is None and s.metric is not None:
            notes.append(f"no configuration meets the budget ({budget_text(s)})")
        if notes:
            body.append(
                f'<tr class="pick-notes"><td colspan="8" class="muted">'
                f"{esc('; '.join(notes))}</td></tr>"
            )
    budgets = sorted({budget_text(s) for s in summaries})
    return (
        '<section id="summary"><h2>At a glance: what to ship</h2>\n'
        '<p class="caption">For each model and device: the fastest configuration (least time '
        "per input: latency p50 / batch; per generated token for a causal LM), the fastest "
        f"whose accuracy stays within the budget ({esc('; '.join(budgets))}), and the best fp32 "
        "of any backend, which every speed-up is measured against. Simulated cells are never "
        "candidates. Each model is judged on the metric under its name: top-1 where there are "
        "labels, else agreement with fp32's top-1 class, else, for an output of one value per "
        "input (no classes to agree on), the share of inputs within tolerance of fp32's output; "
        "a cell whose output SQNR against fp32 is below the floor is never within budget. The "
        "change is in points against that fp32, with the cell's 95% interval shifted alike.</p>\n"
        '<div class="scroll"><table class="summary"><thead><tr><th>model</th><th>pick</th>'
        "<th>configuration</th><th>speed-up vs best fp32</th><th>ms / input</th>"
        "<th>accuracy [95%]</th><th>change, points</th><th>size</th></tr></thead>"
        f"<tbody>{''.join(body)}</tbody></table></div></section>"
    )


def summaries_json(summaries: list[ModelSummary]) -> list[dict[str, Any]]:
    return [s.to_json() for s in summaries]
