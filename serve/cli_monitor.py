"""``embedkd monitor report``: plot and summarize the alignment monitor's history of an index."""

from __future__ import annotations

import argparse

HELP = "the alignment monitor's history: 'report' plots and summarizes it (from the index's query log)"
REPORT_HELP = "plot the rolling student-teacher cosine and top-10 overlap over time; print a summary"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from embedkd.cli.options import add_config_arguments
    from serve.monitor_report import MonitorReportConfig

    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    report = actions.add_parser("report", help=REPORT_HELP, description=REPORT_HELP)
    add_config_arguments(report, MonitorReportConfig, "report options")


def run(args: argparse.Namespace) -> int:
    from embedkd.cli.options import config_from_args
    from serve.monitor_report import MonitorReportConfig, monitor_report

    summary = monitor_report(config_from_args(MonitorReportConfig, args))
    print("\n".join(summary.lines()))
    return 0
