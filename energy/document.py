"""The run report: ``RUN_DIR/report.{md,html,json}`` from what the other commands left there.

``rundata`` reads the run directory into the report dict (the numbers; schema there) and
``figures`` draws its plots; this module formats the report and writes three files, each
atomically: ``report.json`` (the report dict), ``report.md`` (text and tables; the figures are
described there and embedded in the HTML) and ``report.html`` (one self-contained page: CSS
inline, plots as base64 PNG, no external URL).
"""

from __future__ import annotations

import base64
import html
import json
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from htakl_deploy.atomic import write_json, write_text
from htakl_deploy.energy.diagnostics import config_fields_used, diagnostics_sections, warning_blocks
from htakl_deploy.energy.figures import energy_unit, render_figures
from htakl_deploy.energy.report import si
from htakl_deploy.energy.rundata import _num, build_report, load_run
from htakl_deploy.hw.mapping_report import mapping_blocks


# -- number formatting ---------------------------------------------------------------------


def fmt_pct(x, digits: int = 2) -> str:
    return "–" if x is None else f"{100 * x:.{digits}f} %"


def fmt_ops(x) -> str:
    """Operations with G/M/k prefixes: ``2.110 G``."""
    return si(x, " ", "–")


def fmt_energy(pj) -> str:
    if pj is None:
        return "–"
    div, unit = energy_unit(pj)
    return f"{pj / div:.3f} {unit}"


def fmt_ratio(a, b) -> str:
    return "–" if not a or not b else f"×{a / b:.2f}"


# -- document model: blocks rendered to Markdown and to HTML -------------------------------


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    caption: str = ""
    align: str = ""  # one letter per column, "l" or "r" (default: first left, rest right)

    def col_align(self, i: int) -> str:
        return self.align[i] if i < len(self.align) else ("l" if i == 0 else "r")


@dataclass
class Section:
    title: str
    blocks: list  # str (paragraph), list[str] (bullets), Table, ("figure", id), Section


def intro(report: dict) -> str:
    r = report["run"]
    parts = [f"This report summarises run `{r['name']}`: a {r['model'] or '?'} spiking student distilled with "
             f"{r['method'] or '?'} on {r['data'] or '?'} at T = {r['timesteps'] or '?'} timesteps"]
    if report["export"]:
        parts.append("exported to Loihi fixed point")
    if report["backends"]:
        parts.append(f"run on {', '.join(report['backends'])}")
    text = ", ".join(parts) + "."
    if report["energy"]:
        models = sorted({e["energy_model"]["name"] for e in report["energy"].values()})
        text += (f" Energy per inference is counted from the recorded spikes and priced with the "
                 f"{', '.join(models)} energy model{'s' if len(models) > 1 else ''}.")
    return text


def at_a_glance(report: dict) -> list[str]:
    n_warn = len(report.get("warnings") or [])
    items = [f"**{n_warn} sanity warning{'s' if n_warn > 1 else ''}** (section Warnings): the numbers below "
             "may not mean what they seem"] if n_warn else []
    acc = {(a["stage"], a["backend"], a["model"]): a for a in report["accuracy"]}
    if ("training", "torch-train", "student") in acc:
        items.append(f"student accuracy after training: {fmt_pct(acc[('training', 'torch-train', 'student')]['accuracy'])}")
    if report["export"] and report["export"]["int_accuracy"] is not None:
        e = report["export"]
        items.append(f"Loihi fixed point (integer): {fmt_pct(e['int_accuracy'])} vs float "
                     f"{fmt_pct(e['float_accuracy'])} on {e['samples']} images")
    for a in report["accuracy"]:
        if a["stage"] == "simulate":
            items.append(f"{a['backend']}: {fmt_pct(a['accuracy'])} on {a['samples']} samples")
    b = report["primary_backend"]
    if b in report["energy"]:
        ps = report["energy"][b]["per_sample"]
        m = report["energy"][b]["energy_model"]["name"]
        teacher = (f", {fmt_energy(ps['ann_teacher_pj'])} for the ANN teacher "
                   f"({fmt_ratio(ps['ann_teacher_pj'], ps['measured_pj'])} the SNN's measured energy)"
                   if ps["ann_teacher_pj"] is not None else "")
        items.append(f"energy per sample on {b} ({m}): {fmt_energy(ps['measured_pj'])} measured, "
                     f"{fmt_energy(ps['analytic_pj'])} by the paper's analytic estimate{teacher}")
    return items


def accuracy_section(report: dict) -> Section:
    rows = []
    for a in report["accuracy"]:
        notes = []
        if a.get("best_accuracy") is not None:
            notes.append(f"best epoch {fmt_pct(a['best_accuracy'])}")
        ag = a.get("agreement") or {}
        for k in ("spike_agreement", "decision_agreement"):
            if _num(ag.get(k)) is not None:
                notes.append(f"{k.replace('_', ' ')} vs {ag.get('vs', '?')} {fmt_pct(ag[k])}")
        if a.get("float_accuracy") is not None:
            notes.append(f"float student on the same samples {fmt_pct(a['float_accuracy'])}")
        if a.get("samples_per_s") is not None:
            notes.append(f"{a['samples_per_s']:.1f} samples/s")
        ci = a.get("interval_95")
        rows.append([a["description"], a["backend"], fmt_pct(a["accuracy"]),
                     f"{fmt_pct(ci[0], 1)} – {fmt_pct(ci[1], 1)}" if ci else "–",
                     "–" if a["samples"] is None else str(a["samples"]),
                     "–" if a["timesteps"] is None else str(a["timesteps"]), "; ".join(notes), a["file"]])
    limit = (report.get("provenance") or {}).get("config", {}).get("limit_test")
    split = (f"{limit} test images, every class in proportion (`--limit-test {limit}`)" if limit
             else "the data set's whole test split")
    blocks: list = [f"Test-set accuracy of the teacher and of the student at every stage the directory holds "
                    f"(training: {split}; export and simulators: the samples they ran). The 95 % interval is "
                    "the Wilson score interval of the accuracy over that many samples."]
    if rows:
        blocks.append(Table(["model / stage", "backend", "accuracy", "95 % interval", "samples", "T", "notes",
                             "from"], rows, "Accuracy per backend.", "llrrrrll"))
    else:
        blocks.append("No accuracy was found in this directory.")
    e = report["export"]
    if e:
        blocks.append(f"Export: {e['clipped_weights'] if e['clipped_weights'] is not None else '?'} weights clipped "
                      f"to 8 bits; artefacts in `export/`: {', '.join(e['artefacts']) or 'none'}.")
        for warning in e.get("quantisation_warnings") or []:
            blocks.append(f"**Quantisation warning**: {warning}.")
    return Section("Accuracy", blocks)


def activity_section(report: dict) -> Section:
    act = report["activity"]
    if not act:
        return Section("Spiking activity", ["No spike recording or energy report in this directory."])
    backends = list(act)
    names = list(dict.fromkeys(x["name"] for a in act.values() for x in a["layers"]))
    by = {b: {x["name"]: x for x in a["layers"]} for b, a in act.items()}
    rows = []
    for n in names:
        first = next(by[b][n] for b in backends if n in by[b])
        rows.append([n, str(first["neurons"])] + [fmt_pct(by[b][n]["firing_rate"]) if n in by[b] else "–"
                                                  for b in backends])
    rows.append(["all LIF layers", str(sum(by[backends[0]][n]["neurons"] for n in by[backends[0]]))]
                + [fmt_pct(act[b]["firing_rate"]) for b in backends])
    sources = "; ".join(f"{b}: {a['samples']} samples × T = {a['timesteps']}, from `{a['source']}`"
                        for b, a in act.items())
    blocks: list = [
        f"Firing rate = spikes per neuron per timestep, over all recorded samples ({sources}).",
        ("figure", "firing_rates"),
        Table(["LIF layer", "neurons"] + [f"rate {b}" for b in backends], rows, "Firing rate per layer and backend."),
        ("figure", "spikes_per_timestep"),
    ]
    for b, a in act.items():
        t = a["timesteps"]
        rows = [[x["name"]] + [f"{v:.1f}" for v in x["spikes_per_timestep_per_sample"]] + [f"{x['spikes_per_sample']:.1f}"]
                for x in a["layers"]]
        blocks.append(Table(["LIF layer"] + [f"t={i + 1}" for i in range(t)] + ["total"], rows,
                            f"Spikes per sample at each timestep, {b}."))
    return Section("Spiking activity", blocks)


def energy_model_text(m: dict) -> str:
    parts = [f"{m['e_ac_pj']:g} pJ per AC", f"{m['e_mac_pj']:g} pJ per MAC"]
    if m.get("e_neuron_update_pj"):
        parts.append(f"{m['e_neuron_update_pj']:g} pJ per neuron update")
    if m.get("e_spike_pj"):
        parts.append(f"{m['e_spike_pj']:g} pJ per spike")
    return f"**{m['name']}** ({', '.join(parts)}); source: {m['source']}"


def energy_layer_table(b: str, en: dict) -> Table:
    ps = en["per_sample"]
    teacher = ps["ann_teacher_pj"] is not None  # a run without a teacher has no ANN columns

    def ann(x) -> list[str]:
        return [fmt_ops(x["ann_teacher_macs"]), fmt_energy(x["ann_teacher_pj"])] if teacher else []

    rows = [[x["name"], x["kind"], x["input"], fmt_pct(x["input_firing_rate"]), fmt_ops(x["acs"]),
             fmt_ops(x["macs"]), fmt_ops(x["dense_ops"]), fmt_energy(x["measured_pj"]), fmt_energy(x["analytic_pj"]),
             *ann(x)] for x in en["layers"]]
    if ps["neuron_pj"]:
        rows.append(["neuron updates + spikes", "", "", "", "", "", "", fmt_energy(ps["neuron_pj"]),
                     fmt_energy(ps["neuron_pj"]), *(["", ""] if teacher else [])])
    rows.append(["total", "", "", fmt_pct(ps["firing_rate"]), fmt_ops(ps["acs"]), fmt_ops(ps["macs"]),
                 fmt_ops(ps["dense_ops"]), fmt_energy(ps["measured_pj"]), fmt_energy(ps["analytic_pj"]), *ann(ps)])
    return Table(["layer", "kind", "input", "input rate", "ACs", "MACs", "dense OPs", "measured", "analytic",
                  *(["ANN MACs", "ANN energy"] if teacher else [])], rows,
                 f"Per layer, per sample, {b} ({en['samples']} samples, T = {en['timesteps']}, "
                 f"energy model {en['energy_model']['name']}). The total firing rate is over all LIF neurons.",
                 "llll")


def energy_section_doc(report: dict) -> Section:
    en = report["energy"]
    if not en:
        return Section("Energy", ["No energy report in this directory (energy/<backend>.json)."])
    teacher = report["run"].get("teacher", True)
    blocks: list = [
        "Measured: every spike's exact fan-out is an accumulate (AC); inputs that are not spikes (the "
        "encoding layer's pixels) are multiply-accumulates (MACs), every timestep. Analytic: the paper's "
        "estimate, per layer input firing rate × dense OPs; paper style: one network-wide firing rate × the "
        "spike-driven dense OPs (as in the paper's Table III). "
        + ("ANN teacher: the same architecture's dense MACs for one forward pass. " if teacher else
           "This run was not distilled from a teacher (imported, or trained without one): no teacher energy. ")
        + "All values per sample (one inference).",
    ]
    models = {b: e["energy_model"] for b, e in en.items()}
    for name in dict.fromkeys(m["name"] for m in models.values()):
        users = [b for b, m in models.items() if m["name"] == name]
        blocks.append(f"Energy model for {', '.join(users)}: {energy_model_text(models[users[0]])}.")
    rows = []
    for b, e in en.items():
        ps = e["per_sample"]
        rows.append([b, e["energy_model"]["name"], fmt_ops(ps["acs"]), fmt_ops(ps["macs"]), fmt_energy(ps["measured_pj"]),
                     fmt_energy(ps["analytic_pj"]), fmt_energy(ps["paper_style_pj"]),
                     *([fmt_energy(ps["ann_teacher_pj"]), fmt_ratio(ps["ann_teacher_pj"], ps["measured_pj"])]
                       if teacher else [])])
    blocks += [Table(["backend", "energy model", "ACs", "MACs", "measured", "analytic", "paper style",
                      *(["ANN teacher", "ANN / SNN"] if teacher else [])], rows,
                     "Energy per sample, measured vs the estimates"
                     + ("; ANN / SNN = ANN teacher energy ÷ measured SNN energy." if teacher else "."), "ll"),
               ("figure", "energy_totals"), ("figure", "energy_layers")]
    for b, e in en.items():
        blocks.append(energy_layer_table(b, e))
    return Section("Energy", blocks)


def provenance_section(report: dict) -> Section:
    p = report["provenance"]
    git = p["git"]
    dirty = {True: " (uncommitted changes)", False: "", None: ""}[git.get("dirty")]
    started = (time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(p["started_unix_s"]))
               if _num(p.get("started_unix_s")) is not None else "unknown")
    argv = shlex.join(map(str, p["argv"])) if isinstance(p.get("argv"), list) else "unknown"
    blocks: list = [[f"git SHA: `{git.get('sha') or 'unknown'}`{dirty}", f"command: `{argv}`",
                     f"seed: {p.get('seed')}", f"host: {p.get('host') or 'unknown'} ({p.get('platform') or '?'})",
                     f"started: {started}",
                     f"report generated by {report['generated']['by']} on "
                     f"{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(report['generated']['unix_s']))}"]]
    if p["versions"]:
        blocks.append(Table(["package", "version"], [[k, str(v) if v else "not installed"]
                                                      for k, v in p["versions"].items()], "Package versions.", "ll"))
    used, hidden = config_fields_used(p["config"])
    blocks.append(Table(["config key", "value"], [[k, json.dumps(v)] for k, v in sorted(used.items())],
                        "Resolved configuration (config.json)"
                        + (f"; {len(hidden)} settings of other methods not shown." if hidden else "."), "ll"))
    return Section("Provenance", blocks)


def document(report: dict) -> tuple[str, list[Section]]:
    """Title and sections of the human-readable report."""
    sections = [Section("Summary", [intro(report), at_a_glance(report)])]
    notes = [f"missing: {m}" for m in report["missing"]] + [f"could not read: {m}" for m in report["problems"]]
    if notes:
        sections[0].blocks += ["What this directory does not (yet) hold:", notes]
    sections.append(Section("Warnings", warning_blocks(report)))
    extra = {s.title: s for s in diagnostics_sections(report, Section, Table, fmt_pct, fmt_ops)}
    sections += [accuracy_section(report), *[extra[t] for t in ("Training",) if t in extra],
                 activity_section(report), energy_section_doc(report),
                 *[extra[t] for t in ("NeuroBench-style metrics", "Quantisation") if t in extra],
                 Section("Hardware mapping", mapping_blocks(report, Table)),
                 *[extra[t] for t in ("Stage timings",) if t in extra], provenance_section(report)]
    return f"htakl-deploy report: {report['run']['name']}", sections


def _anchor(title: str) -> str:
    """The GitHub-style anchor of a section title (lower case, spaces → dashes)."""
    return re.sub(r"[^a-z0-9 -]", "", title.lower()).replace(" ", "-")


def _md_cell(s: str) -> str:
    return s.replace("|", "\\|").replace("\n", " ")


def render_markdown(report: dict) -> str:
    title, sections = document(report)
    figs = {f["id"]: (i + 1, f) for i, f in enumerate(report["figures"])}
    out = [f"# {title}", "", "Contents: " + " · ".join(f"[{sec.title}](#{_anchor(sec.title)})" for sec in sections), ""]
    for sec in sections:
        out += [f"## {sec.title}", ""]
        for b in sec.blocks:
            if isinstance(b, str):
                out += [b, ""]
            elif isinstance(b, list):
                out += [f"- {x}" for x in b] + [""]
            elif isinstance(b, Table):
                out += [f"*{b.caption}*", ""] if b.caption else []
                out.append("| " + " | ".join(_md_cell(h) for h in b.headers) + " |")
                out.append("|" + "|".join("---:" if b.col_align(i) == "r" else ":---" for i in range(len(b.headers))) + "|")
                out += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in b.rows] + [""]
            elif isinstance(b, tuple) and b[1] in figs:
                n, f = figs[b[1]]
                out += [f"*Figure {n}: {f['title']}. {f['caption']} (plot in report.html)*", ""]
    return "\n".join(out).rstrip() + "\n"


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;max-width:1100px;margin:2em auto;
padding:0 1em;color:#222;line-height:1.45}
h1{font-size:1.6em;border-bottom:2px solid #ddd;padding-bottom:.3em}h2{margin-top:1.8em;font-size:1.3em}
table{border-collapse:collapse;margin:.5em 0 1.2em;font-size:.9em}
th,td{border:1px solid #ccc;padding:.25em .6em}th{background:#f3f3f3}td.r,th.r{text-align:right;white-space:nowrap}
caption{caption-side:top;text-align:left;font-style:italic;padding:.3em 0}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{font-size:.9em;color:#444}
code{background:#f4f4f4;padding:0 .2em;border-radius:3px}
nav.toc{font-size:.9em;color:#555}h2.warn{color:#a40000}h2.warn+p,h2.warn+p+ul{background:#fff4e5;
border-left:4px solid #d9822b;padding:.4em .8em;margin:.3em 0}
"""


def _inline_html(text: str) -> str:
    """Escape, then turn `code` and **bold** spans into tags."""
    s = html.escape(text, quote=False)
    s = re.sub(r"`([^`]+)`", r"<code>\1</code>", s)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", s)


def _html_table(t: Table) -> str:
    cls = lambda i: ' class="r"' if t.col_align(i) == "r" else ""  # noqa: E731
    head = "".join(f"<th{cls(i)}>{_inline_html(h)}</th>" for i, h in enumerate(t.headers))
    body = "".join("<tr>" + "".join(f"<td{cls(i)}>{_inline_html(c)}</td>" for i, c in enumerate(row)) + "</tr>"
                   for row in t.rows)
    cap = f"<caption>{_inline_html(t.caption)}</caption>" if t.caption else ""
    return f"<table>{cap}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_html(report: dict, images: dict[str, bytes]) -> str:
    """One self-contained HTML page; ``images`` (figure id → PNG bytes) embedded as base64."""
    title, sections = document(report)
    figs = {f["id"]: (i + 1, f) for i, f in enumerate(report["figures"])}
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>", f"<h1>{html.escape(title)}</h1>"]
    out.append('<nav class="toc">Contents: ' + " · ".join(
        f'<a href="#{_anchor(sec.title)}">{html.escape(sec.title)}</a>' for sec in sections) + "</nav>")
    for sec in sections:
        cls = ' class="warn"' if sec.title == "Warnings" and report.get("warnings") else ""
        out.append(f'<h2 id="{_anchor(sec.title)}"{cls}>{html.escape(sec.title)}</h2>')
        for b in sec.blocks:
            if isinstance(b, str):
                out.append(f"<p>{_inline_html(b)}</p>")
            elif isinstance(b, list):
                out.append("<ul>" + "".join(f"<li>{_inline_html(x)}</li>" for x in b) + "</ul>")
            elif isinstance(b, Table):
                out.append(_html_table(b))
            elif isinstance(b, tuple) and b[1] in figs and b[1] in images:
                n, f = figs[b[1]]
                data = base64.b64encode(images[b[1]]).decode("ascii")
                out.append(f'<figure id="fig-{f["id"]}"><img alt="{html.escape(f["title"])}" '
                           f'src="data:image/png;base64,{data}"><figcaption>Figure {n}: '
                           f"{_inline_html(f['title'])}. {_inline_html(f['caption'])}</figcaption></figure>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# -- entry point ---------------------------------------------------------------------------


def write_report(run_dir: str | Path) -> dict:
    """Write ``report.md``, ``report.html`` and ``report.json`` into ``run_dir`` (each
    atomically) and return the report dict. UserError if ``run_dir`` is not a run directory."""
    run = load_run(run_dir)
    report = build_report(run)
    images = render_figures(report)
    write_text(run.root / "report.md", render_markdown(report))
    write_text(run.root / "report.html", render_html(report, images))
    write_json(run.root / "report.json", report)
    return report
