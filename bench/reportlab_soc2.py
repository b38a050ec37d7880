#!/usr/bin/env python3
"""The comparison for phase 7 of governance-bench: render the same SOC2 bundle (the JSON export
of an incident) into a PDF with reportlab, the PDF library a Python service of this kind would
use, with the same content as templates/soc2.typ: the header, run, incident, violated policy,
verification, control objectives, attestation, and one table row per trace step with its hashes.

    python3 bench/reportlab_soc2.py BUNDLE.json OUT.pdf [REPEAT]

Prints one JSON line: {"coldMs": ..., "medianMs": ..., "bytes": ...}. Needs `pip install reportlab`.
"""

import io
import json
import statistics
import sys
import time

from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle


def pairs_table(rows):
    table = Table([[k, "" if v is None else str(v)] for k, v in rows], colWidths=[45 * mm, 125 * mm])
    table.setStyle(TableStyle([
        ("FONTSIZE", (0, 0), (-1, -1), 8),
        ("TEXTCOLOR", (0, 0), (0, -1), colors.grey),
        ("VALIGN", (0, 0), (-1, -1), "TOP"),
    ]))
    return table


def render(bundle):
    styles = getSampleStyleSheet()
    out = io.BytesIO()
    doc = SimpleDocTemplate(out, pagesize=A4, leftMargin=15 * mm, rightMargin=15 * mm,
                            title="SOC2 evidence", author="governance")
    run, incident, policy = bundle["run"], bundle.get("incident") or {}, bundle.get("violatedPolicy") or {}
    story = [
        Paragraph("SOC2 evidence: " + (incident.get("title") or run["id"]), styles["Title"]),
        pairs_table([("Export", bundle["exportId"]), ("Exported at", bundle["exportedAt"]),
                     ("Exported by", bundle["exportedBy"]), ("Reason", bundle.get("reason"))]),
        Paragraph("Run", styles["Heading2"]),
        pairs_table([(k, run.get(k)) for k in ("id", "workflowId", "agent", "status",
                                               "terminationReason", "startedAt", "completedAt")]),
        Paragraph("Incident", styles["Heading2"]),
        pairs_table([(k, incident.get(k)) for k in ("id", "severity", "status", "detectedAt",
                                                    "acknowledgedAt", "resolvedAt", "note")]),
        Paragraph("Violated policy", styles["Heading2"]),
        pairs_table([(k, policy.get(k)) for k in ("id", "version", "name", "kind", "action", "severity",
                                                  "thresholdCondition", "evaluatedValue", "reason")]),
        Paragraph("Verification", styles["Heading2"]),
        pairs_table(list((bundle.get("verification") or {}).items())),
        Paragraph("Control objectives", styles["Heading2"]),
    ]
    for objective in bundle.get("controlObjectives") or []:
        story.append(Paragraph(f"<b>{objective['id']}</b> {objective['objective']} {objective['evidence']}",
                               styles["BodyText"]))
    story += [Paragraph("Attestation", styles["Heading2"]),
              Paragraph(bundle.get("attestation") or "", styles["BodyText"]),
              Paragraph("Trace", styles["Heading2"])]
    rows = [["#", "Time", "Type", "Tokens", "Decision", "Entry hash", "Previous hash"]]
    for step in bundle["steps"]:
        rows.append([step["stepIndex"], step["timestamp"], step["type"], step["tokens"], step["decision"],
                     step["entryHash"][:32], step["prevHash"][:32]])
    table = Table(rows, repeatRows=1)
    table.setStyle(TableStyle([
        ("FONTSIZE", (0, 0), (-1, -1), 5.5),
        ("FONTNAME", (0, 0), (-1, 0), "Helvetica-Bold"),
        ("ROWBACKGROUNDS", (0, 1), (-1, -1), [colors.white, colors.whitesmoke]),
        ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
    ]))
    story += [table, Spacer(1, 6 * mm),
              Paragraph(f"Trace head hash: {bundle.get('traceHeadHash')}", styles["BodyText"])]
    doc.build(story)
    return out.getvalue()


def main():
    bundle_path, out_path = sys.argv[1], sys.argv[2]
    repeat = int(sys.argv[3]) if len(sys.argv) > 3 else 5
    with open(bundle_path) as f:
        bundle = json.load(f)
    times = []
    pdf = b""
    for _ in range(repeat + 1):
        started = time.perf_counter()
        pdf = render(bundle)
        times.append((time.perf_counter() - started) * 1000)
    with open(out_path, "wb") as f:
        f.write(pdf)
    print(json.dumps({"coldMs": times[0], "medianMs": statistics.median(times[1:]), "bytes": len(pdf)}))


if __name__ == "__main__":
    main()
