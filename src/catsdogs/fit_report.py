"""The report sections of a `catsdogs fit`: the plan against the budget, every stage's validation score and time,
the choice, and the learning curve's advice ("how many more photos?"); the audit's summary."""

from __future__ import annotations

from html import escape

from catsdogs.budget import format_seconds


def fit_section(record: dict) -> str:
    """An HTML block from fit.json's record."""
    rows = []
    for stage in record["stages"]:
        score = f"{stage['val_accuracy']:.4f}" if stage.get("val_accuracy") is not None else ""
        taken = format_seconds(stage["seconds"]) if stage.get("seconds") is not None else ""
        mark = " (chosen)" if stage["name"] == record.get("chosen_stage") and stage["status"] == "done" else ""
        status = stage.get("note") or stage["status"]  # a note says why the stage was skipped at planning
        rows.append(f"<tr><td>{escape(stage['name'])}{mark}</td><td>{escape(status)}</td><td>{score}</td>"
                    f"<td>~{format_seconds(stage['estimate_s'])}</td><td>{taken}</td></tr>")
    budget = "none" if not record.get("budget_s") else format_seconds(record["budget_s"])
    curve = record.get("learning_curve") or {}
    advice = f"<p><b>How many more photos?</b> {escape(curve['advice'])} (learning_curve.png)</p>" if curve else ""
    plan = record.get("plan") or {}
    eta = (f" The plan's ETA was {format_seconds(plan['eta_s'])}; from the plan to the end took "
           f"{format_seconds(plan['actual_s'])}.") if "actual_s" in plan else ""
    return (f"<h2>How fit chose</h2><p>Budget {escape(budget)}; chosen on {escape(record['chosen_on'])}: "
            f"<b>{escape(record['chosen'])}</b>.{eta}</p>"
            "<div class=\"scroll\"><table><thead><tr><th>stage</th><th>status</th><th>val accuracy</th>"
            f"<th>planned</th><th>took</th></tr></thead><tbody>{''.join(rows)}</tbody></table></div>{advice}")


def audit_section(result, shown: int = 5) -> str:
    """The audit's summary and its most certain findings of each kind, as an HTML block for the report."""
    rows = "".join(f"<tr><td>{escape(i.kind)}</td><td>{escape(i.split)}</td><td>{escape(i.path)}</td>"
                   f"<td>{i.score:.3f}</td><td>{escape(str(i.detail))}</td></tr>"
                   for kind in ("near_duplicate", "label", "outlier") for i in result.of_kind(kind)[:shown])
    table = ("<div class=\"scroll\"><table><thead><tr><th>kind</th><th>split</th><th>photo</th><th>score</th>"
             f"<th>detail</th></tr></thead><tbody>{rows}</tbody></table></div>") if rows else ""
    return (f"<h2>Audit of the photos</h2><p>{escape(result.line())}</p>{table}"
            "<p class=\"muted\">Every finding, with thumbnails: audit/audit.html and audit/issues.csv beside this page.</p>")
