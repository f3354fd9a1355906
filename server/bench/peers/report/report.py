"""Puts a `make bench-peers` run into docs/performance.md: the Markdown table that
bench_peers wrote (with the machine and the date), a plot of its figures drawn
with matplotlib, and the pinned versions of the peers' packages.

Only the part of the document between the two bench-peers markers is replaced;
the text around it is written by hand. Draws nothing it did not read from the
run's results.json.

Usage: python report.py OUT_DIR DOCUMENT.md PLOT.png
  OUT_DIR: the folder bench_peers wrote results.json and table.md into
"""

import argparse
import json
import os
import re
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402 (after choosing the backend)

BEGIN = "<!-- bench-peers:begin -->"
END = "<!-- bench-peers:end -->"
# The folders of the peers' locks: this script's parent's subfolders.
PEERS = Path(__file__).resolve().parent.parent


def figures(peer):
    """The plotted figures of one peer, None where it did not get that far."""
    steps = {step["concurrency"]: step for step in peer["steps"]}
    loaded = [step for step in peer["steps"] if step["concurrency"] >= 16]
    saturation = max(loaded, key=lambda step: step["requests_per_second"], default=None)
    one, sixteen = steps.get(1), steps.get(16)
    return {
        "p50 at 1": one and one["p50_us"],
        "p99 at 1": one and one["p99_us"],
        "at 16": sixteen and sixteen["requests_per_second"],
        "at saturation": saturation and saturation["requests_per_second"],
    }


def bars(axes, names, series, unit):
    """Grouped bars, one group per peer, each labelled with its value or 'failed'."""
    width = 0.8 / len(series)
    for index, (label, values) in enumerate(series.items()):
        offset = (index - (len(series) - 1) / 2) * width
        measured = [(peer + offset, value) for peer, value in enumerate(values) if value]
        drawn = axes.bar([x for x, _ in measured], [v for _, v in measured], width, label=label)
        texts = [f"{v:,.0f}" for _, v in measured]
        axes.bar_label(drawn, texts, fontsize=7, rotation=90, padding=2)
        for peer, value in enumerate(values):
            if value is None:
                # No bar: the word at the foot of the axis, where the bar would stand.
                axes.text(
                    peer + offset,
                    0.02,
                    "failed",
                    transform=axes.get_xaxis_transform(),
                    rotation=90,
                    ha="center",
                    va="bottom",
                    fontsize=7,
                )
    axes.set_xticks(range(len(names)), names, rotation=20, ha="right", fontsize=8)
    axes.set_xlim(-0.5, len(names) - 0.5)
    axes.set_yscale("log")
    axes.set_ylabel(unit)
    # A decade above the tallest bar for its label and the legend.
    tallest = max((value for values in series.values() for value in values if value), default=1)
    axes.set_ylim(top=tallest * 10)
    axes.legend(fontsize=8, ncols=len(series), loc="upper center")


def plot(results, path):
    """Latency at concurrency 1 and throughput, side by side, log scales."""
    names = [peer["name"] for peer in results["peers"]]
    per_peer = [figures(peer) for peer in results["peers"]]
    column = lambda key: [peer[key] for peer in per_peer]  # noqa: E731
    figure, (latency, throughput) = plt.subplots(1, 2, figsize=(11, 4.5))
    bars(latency, names, {"p50": column("p50 at 1"), "p99": column("p99 at 1")}, "microseconds")
    latency.set_title("Latency at concurrency 1 (lower is better)", fontsize=10)
    bars(
        throughput,
        names,
        {"concurrency 16": column("at 16"), "saturation": column("at saturation")},
        "requests/s",
    )
    throughput.set_title("Throughput, single-row JSON (higher is better)", fontsize=10)
    figure.suptitle(f"One core each, one ONNX Runtime thread: {results['machine']}", fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=110)


def pinned_versions():
    """'folder: name version, ...' for each lock, of the packages its requirements.in names."""
    found = []
    for requirements_in in sorted(PEERS.glob("*/requirements.in")):
        lock = requirements_in.with_name("requirements.txt").read_text()
        pins = []
        for line in requirements_in.read_text().splitlines():
            name = re.split(r"[\[=<> ]", line.strip(), maxsplit=1)[0]
            if not name or name.startswith("#"):
                continue
            pin = re.search(rf"^{re.escape(name)}==(\S+)", lock, re.MULTILINE | re.IGNORECASE)
            pins.append(f"{name} {pin.group(1) if pin else '(not in the lock)'}")
        found.append(f"{requirements_in.parent.name}: {', '.join(pins)}")
    return found


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="the folder bench_peers wrote into")
    parser.add_argument("document", type=Path, help="the Markdown document to update")
    parser.add_argument("plot", type=Path, help="where the PNG goes, beside the document")
    args = parser.parse_args()
    results = json.loads((args.out / "results.json").read_text())
    plot(results, args.plot)
    link = os.path.relpath(args.plot, args.document.parent)
    section = "\n".join(
        [
            BEGIN,
            (args.out / "table.md").read_text().strip(),
            "",
            f"![p50 and p99 at concurrency 1, requests/s at 16 and at saturation]({link})",
            "",
            "Versions (the locks in server/bench/peers/<folder>/requirements.txt): "
            + "; ".join(pinned_versions())
            + ".",
            END,
        ]
    )
    document = args.document.read_text()
    before, begin, rest = document.partition(BEGIN)
    _, end, after = rest.partition(END)
    if not begin or not end:
        raise SystemExit(f"{args.document}: no {BEGIN} ... {END} section to replace")
    args.document.write_text(before + section + after)
    print(f"report: wrote {args.plot} and the table in {args.document}")


if __name__ == "__main__":
    main()
