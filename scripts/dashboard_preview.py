"""A static picture of the Grafana dashboard, drawn from the data of its test (docs/img/dashboard.png).

    .venv/bin/python scripts/dashboard_preview.py docs/img/dashboard.png

Starts the backfilled Prometheus of tests/test_prometheus_expressions.py (Debian's prometheus and
promtool: `make promtool`), runs every panel's query of helm/contribflow/dashboards/contribflow.json at
the test's evaluation time, lays the answers out as an HTML page on the dashboard's grid (stat tiles,
tables, bars, lines: a sketch of what Grafana draws, not Grafana), and screenshots it with headless
Chromium (`make chromium`). --html PAGE keeps the HTML page too.
"""

from __future__ import annotations

import argparse
import datetime as dt
import html
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import test_prometheus_expressions as story  # noqa: E402

CELL_W, CELL_H = 58, 30  # pixels per grid column (24) and row
COLORS = {"green": "#56a64b", "red": "#e02f44", "orange": "#ff9830", "blue": "#3274d9"}
LINE_COLORS = ["#7eb26d", "#eab839", "#6ed0e0", "#ef843c", "#e24d42", "#1f78c1", "#ba43a9", "#705da0"]


def _legend(fmt: str, metric: dict[str, str]) -> str:
    out = fmt
    for key, value in metric.items():
        out = out.replace("{{" + key + "}}", value)
    return out


def _format(value: float, unit: str | None, decimals: int | None = None) -> str:
    if unit == "percentunit":
        return f"{value * 100:.1f}%"
    if unit == "s":
        hours, rest = divmod(int(value), 3600)
        return f"{hours // 24}d {hours % 24}h" if hours >= 24 else f"{hours}h {rest // 60}m"
    if unit == "m":
        return f"{value:.0f} min"
    return f"{value:,.0f}" if decimals == 0 or float(value).is_integer() else f"{value:.3g}"


def _color(value: float, defaults: dict[str, Any]) -> str:
    for mapping in defaults.get("mappings", []):
        found = mapping.get("options", {}).get(str(int(value)) if float(value).is_integer() else str(value))
        if found:
            return COLORS.get(found.get("color", "green"), "#56a64b")
    color = "green"
    for step in defaults.get("thresholds", {}).get("steps", []):
        if step["value"] is None or value >= step["value"]:
            color = step["color"]
    return COLORS.get(color, color)


def _text(value: float, defaults: dict[str, Any]) -> str:
    for mapping in defaults.get("mappings", []):
        found = mapping.get("options", {}).get(str(int(value)) if float(value).is_integer() else str(value))
        if found:
            return found["text"]
    return _format(value, defaults.get("unit"), defaults.get("decimals"))


def _instant(server: story.Prometheus, target: dict) -> list[tuple[str, dict, float]]:
    answer = server.get("/api/v1/query", query=target["expr"], time=str(story.EVAL))
    return sorted((_legend(target.get("legendFormat", ""), r["metric"]), r["metric"], float(r["value"][1]))
                  for r in answer["data"]["result"])


def _stat(panel: dict, server: story.Prometheus) -> str:
    defaults = panel["fieldConfig"]["defaults"]
    rows = _instant(server, panel["targets"][0])
    name_only = panel["options"].get("textMode") == "name"
    tiles = []
    for label, _, value in rows:
        text = html.escape(label[5:] if name_only else _text(value, defaults))
        sub = "" if name_only else f"<small>{html.escape(label)}</small>"
        tiles.append(f'<div class="tile" style="background:{_color(value, defaults)}">{text}{sub}</div>')
    return f'<div class="tiles{" many" if len(rows) > 4 else ""}">{"".join(tiles) or "No data"}</div>'


def _bars(panel: dict, server: story.Prometheus) -> str:
    defaults = panel["fieldConfig"]["defaults"]
    rows = sorted(_instant(server, panel["targets"][0]), reverse=True)  # the latest run dates first
    top = max((v for _, _, v in rows), default=1) or 1
    out = []
    for label, _, value in rows:
        width = max(1.0, 100 * value / top)
        out.append(f'<div class="bar"><span>{html.escape(label)}</span><div><i style="width:{width:.1f}%;'
                   f'background:{_color(value, defaults)}"></i></div><b>{_text(value, defaults)}</b></div>')
    return '<div class="bars">' + "".join(out) + "</div>"


def _table(panel: dict, server: story.Prometheus) -> str:
    names = panel["transformations"][1]["options"]["renameByName"]
    columns = [names[f"Value #{t['refId']}"] for t in panel["targets"]]
    rows: dict[str, list[str]] = {}
    for i, target in enumerate(panel["targets"]):
        for _, metric, value in _instant(server, target):
            unit = "percentunit" if columns[i] == "quarantine ratio" else None
            rows.setdefault(metric["run_date"], [""] * len(columns))[i] = _format(value, unit, 0 if not unit else None)
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ["run date", *columns])
    body = "".join("<tr><td>" + d + "</td>" + "".join(f"<td>{v}</td>" for v in vals) + "</tr>"
                   for d, vals in sorted(rows.items(), reverse=True))
    return f"<table><tr>{head}</tr>{body}</table>"


def _lines(panel: dict, server: story.Prometheus, width: int, height: int) -> str:
    target = panel["targets"][0]
    start = story._midnight(story.DAY - dt.timedelta(days=story.HISTORY_DAYS - 1))
    answer = server.get("/api/v1/query_range", query=target["expr"], start=str(start), end=str(story.EVAL),
                        step=str(story.COARSE))
    result = answer["data"]["result"]
    top = max((float(v) for r in result for _, v in r["values"]), default=1) * 1.1
    w, h = width - 150, height - 20
    paths, legend = [], []
    for i, r in enumerate(sorted(result, key=lambda r: r["metric"].get("step", ""))):
        color = LINE_COLORS[i % len(LINE_COLORS)]
        points = " ".join(f"{(float(t) - start) / (story.EVAL - start) * w:.1f},{h - float(v) / top * h:.1f}"
                          for t, v in r["values"])
        paths.append(f'<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{points}"/>')
        name = html.escape(_legend(target["legendFormat"], r["metric"]))
        legend.append(f'<div><i style="background:{color}"></i>{name} {_format(float(r["values"][-1][1]), "s")}</div>')
    return (f'<div class="lines"><svg width="{w}" height="{h}">{"".join(paths)}</svg>'
            f'<div class="legend">{"".join(legend)}</div></div>')


def render(server: story.Prometheus) -> str:
    board = story.dashboard()
    boxes = []
    for panel in board["panels"]:
        g = panel["gridPos"]
        style = (f"left:{g['x'] * CELL_W}px;top:{g['y'] * CELL_H}px;"
                 f"width:{g['w'] * CELL_W - 6}px;height:{g['h'] * CELL_H - 6}px")
        if panel["type"] == "row":
            boxes.append(f'<div class="row" style="{style}">{html.escape(panel["title"])}</div>')
            continue
        kind = panel["type"]
        if kind == "stat":
            inner = _stat(panel, server)
        elif kind == "bargauge":
            inner = _bars(panel, server)
        elif kind == "table":
            inner = _table(panel, server)
        else:
            inner = _lines(panel, server, g["w"] * CELL_W - 20, g["h"] * CELL_H - 40)
        boxes.append(f'<div class="panel" style="{style}"><h3>{html.escape(panel["title"])}</h3>{inner}</div>')
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"]) * CELL_H + 50
    when = dt.datetime.fromtimestamp(story.EVAL, dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    return f"""<!doctype html><meta charset="utf-8"><style>
body{{margin:0;background:#111217;color:#ccccdc;font:12px sans-serif}}
header{{padding:8px 12px;font-size:15px}} header small{{color:#8e8e9e;margin-left:12px}}
main{{position:relative;height:{height}px;margin:0 8px}}
.row{{position:absolute;font-weight:bold;font-size:13px;padding-top:8px}}
.panel{{position:absolute;background:#181b1f;border:1px solid #2c3235;border-radius:2px;overflow:hidden}}
h3{{margin:0;padding:6px 8px;font-size:12px;font-weight:500}}
.tiles{{display:flex;flex-wrap:wrap;gap:3px;padding:0 6px;height:calc(100% - 30px)}}
.tile{{flex:1 1 0;display:flex;flex-direction:column;justify-content:center;align-items:center;color:#fff;
font-size:22px;font-weight:500;border-radius:2px;min-width:40px}}
.tiles.many .tile{{flex:0 0 46px;height:46px;font-size:11px}}
.tile small{{font-size:11px;opacity:.85}}
.bars{{padding:0 8px;overflow:hidden}} .bar{{display:flex;align-items:center;gap:6px;height:17px}}
.bar span{{width:75px;color:#9fa7b3;font-size:11px}} .bar div{{flex:1;background:#22252b;height:11px}}
.bar i{{display:block;height:100%}} .bar b{{width:48px;text-align:right;font-weight:normal}}
table{{border-collapse:collapse;width:100%;font-size:11px}}
th,td{{padding:1px 8px;text-align:right;border-bottom:1px solid #22252b}}
th:first-child,td:first-child{{text-align:left}} th{{color:#6e9fff;font-weight:500}}
.lines{{display:flex;padding:4px 8px}}
svg{{background:#181b1f;border-left:1px solid #2c3235;border-bottom:1px solid #2c3235}}
.legend{{padding-left:8px;font-size:11px}}
.legend i{{display:inline-block;width:10px;height:3px;margin-right:4px;vertical-align:middle}}
</style><header>{html.escape(board["title"])}<small>the test's Prometheus data, at {when}; a sketch of the
Grafana dashboard, drawn by scripts/dashboard_preview.py</small></header><main>{"".join(boxes)}</main>"""


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the PNG to write")
    parser.add_argument("--html", type=Path, help="also keep the HTML page here")
    args = parser.parse_args(argv)
    chromium = shutil.which("chromium")
    if not chromium:
        print("dashboard_preview: chromium is missing: run `make chromium`", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="contribflow-dashboard-") as tmp, \
            story.backfilled_prometheus(Path(tmp)) as server:
        page = render(server)
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.html:
        args.html.write_text(page, encoding="utf-8")
    board = story.dashboard()
    height = max(p["gridPos"]["y"] + p["gridPos"]["h"] for p in board["panels"]) * CELL_H + 60
    with tempfile.TemporaryDirectory(prefix="contribflow-chromium-") as profile:
        page_file = Path(profile) / "dashboard.html"
        page_file.write_text(page, encoding="utf-8")
        done = subprocess.run([chromium, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                               f"--user-data-dir={profile}", f"--window-size={24 * CELL_W + 16},{height}",
                               f"--screenshot={out}", page_file.as_uri()], capture_output=True, text=True,
                              timeout=120)
    if done.returncode != 0 or not out.is_file():
        print(f"dashboard_preview: chromium failed:\n{done.stderr[-2000:]}", file=sys.stderr)
        return 1
    print(f"dashboard_preview: wrote {out} ({out.stat().st_size // 1024} kB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
