"""A monitor run's report as one standalone HTML file: inline CSS and SVG charts, no script, nothing fetched,
so it can be attached to a ticket or an e-mail and opened anywhere. Also what the console's report page embeds
(`report_body`)."""

from __future__ import annotations

from datetime import UTC, datetime
from html import escape
from typing import Any

from bridgehead.monitoring.models import Monitor, MonitorRun

__all__ = ["bars_svg", "render_report", "report_body"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;color:#1f2933;margin:2rem auto;
max-width:1100px;padding:0 1rem}
h1{font-size:1.5rem;margin:0 0 .25rem}h2{font-size:1.15rem;margin:2rem 0 .5rem;border-bottom:1px solid #e4e7eb}
table{border-collapse:collapse;width:100%;margin:.5rem 0}th,td{text-align:left;padding:.35rem .5rem;
border-bottom:1px solid #eef0f2;vertical-align:top}th{color:#52606d;font-weight:600;font-size:.85rem}
.num{text-align:right;font-variant-numeric:tabular-nums}.muted{color:#7b8794}
.tag{display:inline-block;padding:.05rem .45rem;border-radius:.6rem;font-size:.8rem;font-weight:600}
.drift{background:#fde8e8;color:#9b1c1c}.ok{background:#def7ec;color:#03543f}.warn{background:#fdf6b2;color:#723b13}
.cards{display:flex;gap:1rem;flex-wrap:wrap}.card{border:1px solid #e4e7eb;border-radius:.5rem;padding:.6rem .9rem;
min-width:10rem}.card b{display:block;font-size:1.3rem}
.legend span{display:inline-block;width:.8rem;height:.8rem;margin:0 .3rem 0 .8rem;vertical-align:middle}
"""
REF_COLOR = "#9aa5b1"
CUR_COLOR = "#3f83f8"


def _fmt(value: Any, digits: int = 4) -> str:
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}g}"
    return escape(str(value))


def bars_svg(labels: list[str], reference: list[float], current: list[float], width: int = 420) -> str:
    """Grouped horizontal bars: reference (grey) and current (blue) share per bin or category."""
    if not labels:
        return '<p class="muted">No distribution to draw.</p>'
    row, label_w = 22, 150
    height = row * len(labels) + 8
    top = max([*reference, *current, 1e-9])
    scale = (width - label_w - 50) / top
    parts = [
        f'<svg width="{width}" height="{height}" role="img" aria-label="reference and current distribution">'
    ]
    for i, (name, r, c) in enumerate(zip(labels, reference, current, strict=True)):
        y = 4 + i * row
        parts.append(
            f'<text x="{label_w - 6}" y="{y + 13}" font-size="11" text-anchor="end" fill="#52606d">'
            f"{escape(str(name))[:26]}</text>"
            f'<rect x="{label_w}" y="{y + 1}" width="{max(r * scale, 0):.1f}" height="8" fill="{REF_COLOR}">'
            f"<title>reference {r:.1%}</title></rect>"
            f'<rect x="{label_w}" y="{y + 10}" width="{max(c * scale, 0):.1f}" height="8" fill="{CUR_COLOR}">'
            f"<title>current {c:.1%}</title></rect>"
            f'<text x="{label_w + max(r, c) * scale + 4:.1f}" y="{y + 15}" font-size="10" fill="#7b8794">'
            f"{c:.1%}</text>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _verdict(drifted: Any, tested: bool = True) -> str:
    if not tested:
        return '<span class="tag warn">not tested</span>'
    return '<span class="tag drift">drift</span>' if drifted else '<span class="tag ok">stable</span>'


def report_body(report: dict[str, Any]) -> str:
    """The report's sections as HTML (shared by the standalone file and the console page)."""
    drift = report.get("drift") or {}
    perf = report.get("performance") or {}
    out = ['<div class="cards">']
    cards = [
        ("Rows in window", report.get("rows")),
        ("Drifted columns", f"{drift.get('n_drifted', 0)} of {drift.get('n_columns', 0)}"),
        ("Dataset drift", "yes" if drift.get("dataset_drift") else "no"),
        ("Labelled rows", perf.get("labelled_rows")),
    ]
    current = perf.get("current") or {}
    for key in ("accuracy", "f1", "roc_auc", "mae", "rmse"):
        if current.get(key) is not None:
            cards.append((key.replace("_", " ").upper() if key in ("mae", "rmse") else key.capitalize(),
                          _fmt(current[key], 3)))  # fmt: skip
    for name, value in cards:
        out.append(f'<div class="card"><span class="muted">{escape(name)}</span><b>{_fmt(value)}</b></div>')
    out.append("</div>")

    breaches = (report.get("rules") or {}).get("breaches") or []
    if breaches:
        out.append(
            "<h2>Rules breached</h2><table><tr><th>Metric</th><th>Rule</th><th>Value</th><th>Severity</th></tr>"
        )
        for b in breaches:
            out.append(
                f"<tr><td>{escape(b['metric'])}</td><td>{escape(b['op'])} {_fmt(b['threshold'])}</td>"
                f'<td class="num">{_fmt(b.get("value"))}</td><td>{escape(b["severity"])}</td></tr>'
            )
        out.append("</table>")

    out.append("<h2>Data drift</h2>")
    out.append(
        f"<p>Dataset drift when at least {_fmt(drift.get('drift_share'))} of the columns drift "
        f"(Evidently's preset). Drifted share: {_fmt(drift.get('share'))}.</p>"
    )
    out.append(
        '<p class="legend"><span style="background:' + REF_COLOR + '"></span>reference'
        '<span style="background:' + CUR_COLOR + '"></span>current</p>'
    )
    out.append(
        "<table><tr><th>Column</th><th>Test</th><th>Statistic</th><th>Score</th><th>Threshold</th>"
        "<th>PSI</th><th>Verdict</th><th>Distribution</th></tr>"
    )
    for c in drift.get("columns") or []:
        dist = c.get("distribution") or {}
        note = ""
        if c.get("approximate"):
            note = f' <span class="muted" title="error bound">±{_fmt(c.get("error_bound"), 2)}</span>'
        if c.get("reason"):
            note += f'<br><span class="muted">{escape(str(c["reason"]))}</span>'
        out.append(
            f"<tr><td><b>{escape(c['column'])}</b></td><td>{escape(str(c['test']))}</td>"
            f'<td class="num">{_fmt(c.get("statistic"))}</td><td class="num">{_fmt(c.get("score"))}{note}</td>'
            f'<td class="num">{_fmt(c.get("threshold"))}</td>'
            f'<td class="num">{_fmt(c.get("psi"), 3)} <span class="muted">{escape(str(c.get("psi_band") or ""))}</span></td>'
            f"<td>{_verdict(c.get('drifted'), c.get('statistic') is not None)}</td>"
            f"<td>{bars_svg(dist.get('labels') or [], dist.get('reference') or [], dist.get('current') or [])}</td></tr>"
        )
    out.append("</table>")
    schema = drift.get("schema_change") or {}
    if schema.get("added") or schema.get("removed") or schema.get("retyped"):
        out.append(
            f"<p><b>Schema change.</b> Added: {escape(', '.join(schema.get('added') or []) or 'none')}; "
            f"removed: {escape(', '.join(schema.get('removed') or []) or 'none')}; "
            f"retyped: {escape(', '.join(schema.get('retyped') or {}) or 'none')}.</p>"
        )
    quality = drift.get("quality") or {}
    if quality:
        out.append(
            "<h2>Data quality</h2><table><tr><th>Column</th><th>Null rate (ref → now)</th>"
            "<th>Out of range</th><th>Unseen categories</th></tr>"
        )
        for name, q in quality.items():
            unseen = q.get("unseen_categories") or {}
            out.append(
                f"<tr><td>{escape(name)}</td><td class='num'>{_fmt(q.get('null_rate_reference'), 3)} → "
                f"{_fmt(q.get('null_rate_current'), 3)}</td><td class='num'>{_fmt(q.get('out_of_range_share'), 3)}</td>"
                f"<td>{escape(', '.join(list(unseen)[:8])) or '—'}</td></tr>"
            )
        out.append("</table>")

    pred = report.get("prediction") or {}
    out.append("<h2>Predictions</h2>")
    pd_ = pred.get("drift")
    if pd_ and pd_.get("score") is not None:
        out.append(
            f"<p>Prediction drift against the reference's <b>{escape(str(pd_.get('column')))}</b> column: "
            f"{escape(str(pd_.get('test')))} score {_fmt(pd_.get('score'))} (threshold {_fmt(pd_.get('threshold'))}) "
            f"{_verdict(pd_.get('drifted'))}</p>"
        )
    else:
        out.append('<p class="muted">No target column in the reference to compare predictions with.</p>')
    if pred.get("confidence_mean") is not None:
        out.append(f"<p>Mean confidence (highest class probability): {_fmt(pred['confidence_mean'], 3)}</p>")

    out.append("<h2>Performance</h2>")
    if not perf.get("labelled_rows"):
        out.append('<p class="muted">No labels have come back for this window yet: drift and confidence are the '
                   "early signal.</p>")  # fmt: skip
    else:
        base = perf.get("baseline") or {}
        decline = perf.get("decline") or {}
        out.append("<table><tr><th>Metric</th><th>Now</th><th>Baseline</th><th>Decline</th></tr>")
        for key, value in current.items():
            if key in ("rows", "roc_auc_error_bound"):
                continue
            out.append(
                f"<tr><td>{escape(key)}</td><td class='num'>{_fmt(value, 4)}</td>"
                f"<td class='num'>{_fmt(base.get(key), 4)}</td><td class='num'>{_fmt(decline.get(key), 3)}</td></tr>"
            )
        out.append("</table>")

    fairness = report.get("fairness") or {}
    if fairness:
        out.append("<h2>Fairness</h2>")
        for attribute, f in fairness.items():
            out.append(
                f"<h3>{escape(attribute)}</h3><p>Demographic-parity difference {_fmt(f.get('demographic_parity_difference'), 3)}, "
                f"equalized-odds difference {_fmt(f.get('equalized_odds_difference'), 3)}, "
                f"disparate-impact ratio {_fmt(f.get('disparate_impact_ratio'), 3)}.</p>"
                "<table><tr><th>Group</th><th>Rows</th><th>Selection rate</th><th>TPR</th><th>FPR</th></tr>"
            )
            for group, g in (f.get("groups") or {}).items():
                out.append(
                    f"<tr><td>{escape(group)}</td><td class='num'>{_fmt(g.get('rows'))}</td>"
                    f"<td class='num'>{_fmt(g.get('selection_rate'), 3)}</td><td class='num'>{_fmt(g.get('tpr'), 3)}</td>"
                    f"<td class='num'>{_fmt(g.get('fpr'), 3)}</td></tr>"
                )
            out.append("</table>")
    return "".join(out)


def render_report(run: MonitorRun, monitor: Monitor, endpoint: str) -> str:
    report = run.report or {}
    start = datetime.fromtimestamp(run.window_start_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    end = datetime.fromtimestamp(run.window_end_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")
    model = report.get("model") or {}
    title = f"Monitoring report — {endpoint} / {monitor.name}"
    head = (
        f"<h1>{escape(title)}</h1><p class='muted'>Window {start} → {end} UTC · model "
        f"{escape(str(model.get('name', '?')))} v{escape(str(model.get('version', '?')))} · run {escape(run.id)} · "
        f"{escape(run.status)}</p>"
    )
    if run.status != "succeeded":
        body = f"<p><b>This run failed:</b> {escape(run.error)}</p>"
    else:
        body = report_body(report)
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}</title>'
        f'<meta name="viewport" content="width=device-width, initial-scale=1"><style>{_CSS}</style></head>'
        f"<body>{head}{body}<p class='muted'>Generated by Bridgehead.</p></body></html>"
    )
