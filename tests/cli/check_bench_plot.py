#!/usr/bin/env python3
"""Reads back a witmq-bench --plot SVG and checks it against the --json report of the same run.

    check_bench_plot.py PLOT.svg REPORT.json

The SVG must be well-formed XML with both charts; every marked percentile of the latency curves
must hold the report's value (p50, p90, p99, p99.9 and the maximum, received and confirmed);
the throughput lines must add up to the messages produced and consumed; the curve must never go
down (a percentile curve is monotonic). Prints what differs and exits 1, else exits 0.
"""
import json
import sys
import xml.etree.ElementTree as ET

NS = "{http://www.w3.org/2000/svg}"


def main(svg_path, report_path):
    errors = []
    root = ET.parse(svg_path).getroot()  # raises on XML that is not well-formed
    if root.tag != NS + "svg":
        errors.append("root element is %s, not svg" % root.tag)
    with open(report_path) as f:
        report = json.load(f)
    groups = {g.get("id"): g for g in root.iter(NS + "g")}
    for chart in ("latency", "throughput"):
        if chart not in groups:
            errors.append("no %s chart" % chart)
    series_of_report = {"received": report["latency_us"], "confirmed": report["confirm_latency_us"]}
    marks = [c for c in root.iter(NS + "circle") if c.get("class") == "mark"]
    for series, figures in series_of_report.items():
        got = {c.get("data-percentile"): float(c.get("data-latency-us"))
               for c in marks if c.get("data-series") == series}
        if figures["count"] == 0:
            if got:
                errors.append("%s: marks drawn without values" % series)
            continue
        want = {"50": figures["p50"], "90": figures["p90"], "99": figures["p99"],
                "99.9": figures["p99.9"], "100": figures["max"]}
        for p, value in want.items():
            if p not in got:
                errors.append("%s p%s: not marked (marked: %s)" % (series, p, sorted(got)))
            elif abs(got[p] - value) > 1e-6 * max(1.0, value):
                errors.append("%s p%s: the plot says %s us, the report %s us"
                              % (series, p, got[p], value))
        curve = [p for p in root.iter(NS + "polyline")
                 if p.get("class") == "curve" and p.get("data-series") == series]
        if len(curve) != 1:
            errors.append("%s: %d curves" % (series, len(curve)))
        else:
            ys = [float(xy.split(",")[1]) for xy in curve[0].get("points").split()]
            # SVG y grows downwards: a latency that never decreases is a y that never grows.
            if any(b > a + 1e-9 for a, b in zip(ys, ys[1:])):
                errors.append("%s: the percentile curve goes down somewhere" % series)
    rates = {p.get("data-series"): p for p in root.iter(NS + "polyline") if p.get("class") == "rate"}
    for series, side in (("produced", "producers"), ("consumed", "consumers")):
        if series not in rates:
            errors.append("no %s throughput line" % series)
            continue
        total = float(rates[series].get("data-messages"))
        if abs(total - report[side]["messages"]) > 0.5:
            errors.append("%s: the throughput line adds up to %s messages, the report says %s"
                          % (series, total, report[side]["messages"]))
        if not rates[series].get("points").strip():
            errors.append("%s: the throughput line has no points" % series)
    for e in errors:
        print("plot: " + e)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
