#!/usr/bin/env python3
"""Plots of BENCHMARKS.md: server CPU per forwarded packet and loss against
viewers (benchmarks.png), and the overload curve, delivered pps and loss
against offered viewers per WISP_MAX_LOAD (overload.png, from step 5 of
scripts/run_benchmarks.sh).

    scripts/plot_benchmarks.py bench-results/runs.jsonl   # writes results.csv, then plots it
    scripts/plot_benchmarks.py bench-results/results.csv  # plots an existing CSV

runs.jsonl holds one wisp-load JSON object per line (WISP_LOAD_LOG); the CSV
gets one row per load run, the PNGs (next to the input, each only if the CSV
has its rows) are drawn from the CSV only. Needs matplotlib.
"""
import csv
import json
import os
import sys

FIELDS = [
    "label",
    "series",
    "viewers",
    "video_pps",
    "sent_pps",
    "forwarded_pps",
    "loss_ratio",
    "latency_p50_us",
    "latency_p99_us",
    "server_cpu_s",
    "server_cpu_us_per_packet",
    "server_core_us_per_packet",
    "server_rss_kib",
    "udp_rcvbuf_errors",
    "config",
    "admitted",
    "refused",
    "server_loop_busy_ratio",
    "server_viewers_paused",
]


def series_of(room):
    # Room names of scripts/run_benchmarks.sh: series-N, ramp-N-PPS, maxload-N-PPS, halfload,
    # overload-MAXLOAD-N.
    return room.split("-")[0] if room else "load"


def config_of(room):
    # The WISP_MAX_LOAD of an overload-MAXLOAD-N room ("default" when unset).
    parts = (room or "").split("-")
    return parts[1].replace("_", ".") if parts[0] == "overload" and len(parts) == 3 else ""


def jsonl_to_csv(src, dst):
    rows = []
    with open(src) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            r = json.loads(line)
            if r.get("mode") != "load":
                continue
            row = {k: r.get(k) for k in FIELDS}
            row["series"] = series_of(r.get("room"))
            row["config"] = config_of(r.get("room"))
            sent = (r.get("sent_video") or 0) + (r.get("sent_audio") or 0)
            row["sent_pps"] = round(sent / r["duration_s"], 1)
            rows.append(row)
    with open(dst, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    return dst


def plot(csv_path, png_path):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    if not any(r["series"] in ("series", "ramp") for r in rows):
        return None
    names = {
        "series": "≈250k forwarded pps (video pps = 250k / viewers)",
        "ramp": "1000 video pps per viewer (ramp)",
    }
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = sorted({r["label"] for r in rows if r["label"]})
    for key, style in (("series", "o-"), ("ramp", "s--")):
      for label in labels:
        # One point per viewer count (the last run wins), within ±20 % of the series' rate.
        by_v = {}
        for r in rows:
            if r["series"] == key and r["label"] == label and r["server_cpu_us_per_packet"]:
                if key == "series" and not 200e3 <= float(r["forwarded_pps"]) <= 300e3:
                    continue
                by_v[int(r["viewers"])] = (int(r["viewers"]), float(r["server_cpu_us_per_packet"]),
                                           float(r["loss_ratio"]), float(r["forwarded_pps"]))
        pts = sorted(by_v.values())
        if not pts:
            continue
        v = [p[0] for p in pts]
        ax1.plot(v, [p[1] for p in pts], style, label=f"{names[key]}, {label}")
        for x, y, _, pps in pts:
            ax1.annotate(f"{pps / 1000:.0f}k", (x, y), textcoords="offset points",
                         xytext=(4, 4), fontsize=7)
        ax2.plot(v, [p[2] * 100 for p in pts], style, label=f"{names[key]}, {label}")
    ax1.axhline(1.6, color="grey", lw=0.8, ls=":")
    ax1.text(10, 1.65, "target 1.6 µs", fontsize=7, color="grey")
    ax1.set_xscale("log")
    ax1.set_xlabel("viewers")
    ax1.set_ylabel("server CPU µs per forwarded packet")
    ax1.set_ylim(bottom=0)
    ax1.set_title("CPU per packet (labels: forwarded pps)", fontsize=9)
    ax1.legend(fontsize=7)
    ax2.axhline(0.1, color="grey", lw=0.8, ls=":")
    ax2.text(10, 0.11, "0.1 %", fontsize=7, color="grey")
    ax2.set_xscale("log")
    ax2.set_yscale("symlog", linthresh=0.01)
    ax2.set_xlabel("viewers")
    ax2.set_ylabel("loss %")
    ax2.set_title("loss", fontsize=9)
    ax2.legend(fontsize=7)
    fig.suptitle("wisp fan-out, 1 core (taskset -c 0); server " + ", ".join(labels), fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    return png_path


def plot_overload(csv_path, png_path):
    with open(csv_path) as f:
        rows = [r for r in csv.DictReader(f) if r["series"] == "overload"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    keys = sorted({(r["config"], r["label"]) for r in rows})
    for config, label in keys:
        # One point per offered viewer count (the last run wins).
        by_v = {}
        for r in rows:
            if (r["config"], r["label"]) == (config, label):
                by_v[int(r["viewers"])] = r
        v = sorted(by_v)
        name = f"WISP_MAX_LOAD={config}, {label}"
        pps = [float(by_v[x]["forwarded_pps"]) for x in v]
        ax1.plot(v, pps, "o-", label=name)
        for x, y in zip(v, pps):
            adm = by_v[x].get("admitted") or x
            ax1.annotate(f"{adm}", (x, y), textcoords="offset points",
                         xytext=(4, 4), fontsize=7)
        ax2.plot(v, [float(by_v[x]["loss_ratio"]) * 100 for x in v], "o-", label=name)
    ax1.set_xscale("log", base=2)
    ax1.set_xlabel("offered viewers (× 550 pps)")
    ax1.set_ylabel("delivered pps (all admitted viewers)")
    ax1.set_ylim(bottom=0)
    ax1.set_title("delivered pps (labels: admitted viewers)", fontsize=9)
    ax1.legend(fontsize=7, loc="upper left")
    ax2.axhline(0.5, color="grey", lw=0.8, ls=":")
    ax2.text(v[0], 0.55, "0.5 %", fontsize=7, color="grey")
    ax2.set_xscale("log", base=2)
    ax2.set_yscale("symlog", linthresh=0.01)
    ax2.set_xlabel("offered viewers (× 550 pps)")
    ax2.set_ylabel("loss % over admitted viewers")
    ax2.set_ylim(bottom=0)
    ax2.set_title("loss", fontsize=9)
    ax2.legend(fontsize=7, loc="upper left")
    for ax in (ax1, ax2):
        ax.set_xticks(v, [str(x) for x in v])
    fig.suptitle("wisp overload control, 1 core (taskset -c 0)", fontsize=10)
    fig.tight_layout()
    fig.savefig(png_path, dpi=110)
    return png_path


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    src = sys.argv[1]
    out_dir = os.path.dirname(src) or "."
    csv_path = src
    if src.endswith(".jsonl"):
        csv_path = jsonl_to_csv(src, os.path.join(out_dir, "results.csv"))
    print(csv_path)
    for png in (plot(csv_path, os.path.join(out_dir, "benchmarks.png")),
                plot_overload(csv_path, os.path.join(out_dir, "overload.png"))):
        if png:
            print(png)


if __name__ == "__main__":
    main()
