"""``sbrt protocols``: the standards catalogue (list, show every rule with its source, validate a file)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import click

from sbrtstandards.catalogue import format_limit
from sbrtstandards.cli.common import emit_json, info, json_option

protocol_dir_option = click.option(
    "--protocol-dir",
    "protocol_dirs",
    multiple=True,
    metavar="DIR",
    help="Extra folder of protocol files (*.toml), searched after SBRT_PROTOCOL_PATH. Repeatable.",
)


@click.group(name="protocols", invoke_without_command=True)
@protocol_dir_option
@json_option
@click.pass_context
def protocols(ctx: click.Context, protocol_dirs: tuple[str, ...], json_path: str | None) -> None:
    """List the protocols of the standards catalogue (built-in and user folders).

    User protocol files live in the folders of the SBRT_PROTOCOL_PATH environment variable
    (separated like PATH) or of --protocol-dir; `sbrt protocols validate FILE` checks one.

    Examples: sbrt protocols;  sbrt protocols show cn-lung-sbrt;  sbrt protocols --json -
    """
    if ctx.invoked_subcommand is not None:
        return
    from sbrtstandards.catalogue import list_protocols

    infos = list_protocols(protocol_dirs)
    emit_json({"protocols": [p.to_json() for p in infos]}, json_path)
    if json_path == "-":
        return
    rows = [
        [
            p.id,
            str(p.n_rules),
            "any" if p.fractions is None else _ranges(p.fractions),
            p.title + ("" if p.builtin else f"  [{p.path}]"),
        ]
        for p in infos
    ]
    info(_table(["id", "rules", "fractions", "title"], rows), json_path)
    for p in infos:
        info(f"  {p.id}: {p.source}", json_path)


@protocols.command(name="show")
@click.argument("protocol_id", metavar="ID")
@protocol_dir_option
@json_option
def show(protocol_id: str, protocol_dirs: tuple[str, ...], json_path: str | None) -> None:
    """Print every rule of protocol ID with its limit, conditions and source.

    Also the conformality table, the fractionation schemes, the non-dose QA items and notes.

    Example: sbrt protocols show cn-lung-sbrt --json rules.json
    """
    from sbrtstandards.catalogue import load_protocol

    protocol = load_protocol(protocol_id, protocol_dirs)
    emit_json(protocol.to_json(), json_path)
    if json_path != "-":
        click.echo(render_protocol(protocol))


@protocols.command(name="validate")
@click.argument("files", nargs=-1, required=True, type=click.Path(dir_okay=False), metavar="FILE...")
@json_option
def validate(files: tuple[str, ...], json_path: str | None) -> None:
    """Check protocol files against the catalogue schema (exit 2 with the file, rule and field on error).

    Example: sbrt protocols validate my-centre-lung.toml
    """
    from sbrtstandards.catalogue import load_protocol_file

    results = []
    for path in files:
        p = load_protocol_file(path)
        results.append({"file": path, "id": p.id, "rules": p.info().n_rules})
        info(f"ok: {path}: protocol {p.id}, {p.info().n_rules} rules", json_path)
    emit_json({"valid": results}, json_path)


# --------------------------------------------------------------------------- text rendering


def render_protocol(protocol: Any) -> str:
    """Readable text of a whole protocol (what ``sbrt protocols show`` prints)."""
    lines = [
        f"{protocol.id}: {protocol.title}",
        f"source:    {protocol.source}",
        f"version:   {protocol.version}",
        f"sites:     {', '.join(protocol.sites)}",
        f"fractions: {'any' if protocol.fractions is None else _ranges(protocol.fractions)}",
        f"file:      {protocol.path}",
        "",
        f"RULES ({len(protocol.rules)})",
    ]
    section = None
    for rule in protocol.rules:
        if rule.section != section:
            section = rule.section
            lines.append(f"  [{section or 'rules'}]")
        lines += _render_rule(rule)
    if protocol.conformality is not None:
        lines += ["", *_render_table(protocol.conformality)]
    if protocol.fractionation:
        lines += ["", f"FRACTIONATION ({len(protocol.fractionation)})"]
        for s in protocol.fractionation:
            lines += _render_scheme(s)
    if protocol.qa_items:
        lines += ["", f"QA ITEMS ({len(protocol.qa_items)})"]
        rows = [
            [q.id, q.category, f"{q.item}: {format_limit(q.comparator, q.value)} {q.unit}".rstrip()]
            for q in protocol.qa_items
        ]
        lines += ["  " + row for row in _table(["id", "category", "requirement"], rows).splitlines()]
        lines += ["  sources:"] + [
            f"    {q.id}: {q.source}" + (f"  ({q.note})" if q.note else "") for q in protocol.qa_items
        ]
    if protocol.notes:
        lines += ["", f"NOTES ({len(protocol.notes)})"]
        for n in protocol.notes:
            lines += [f"  {n.id}: {n.text}", f"      source: {n.source}"]
    return "\n".join(lines)


def _render_rule(rule: Any) -> list[str]:
    text = rule.describe()
    if rule.priority == "optimal":
        text += "  [optimal]"
    if rule.dose_model != "physical":
        text += f"  [{rule.dose_model.upper()}, alpha/beta {rule.alpha_beta_gy:g} Gy]"
    if not rule.confirmed:
        text += "  [UNCONFIRMED]"
    out = [f"  {rule.id}", f"      {text}"]
    if rule.conditions:
        out.append(f"      when:   {_conditions(rule.conditions)}")
    if rule.prior_dose_discount_percent:
        from sbrtstandards.radiobiology import INTERVAL_BAND_LABELS

        parts = [f"{INTERVAL_BAND_LABELS[b]} {p:g} %" for b, p in rule.prior_dose_discount_percent.items()]
        out.append(f"      prior dose forgiven: {', '.join(parts)}")
    out.append(f"      source: {rule.source}")
    if rule.note:
        out.append(f"      note:   {rule.note}")
    return out


def _render_table(table: Any) -> list[str]:
    cols = table.columns
    header = ["PTV cc"] + [f"{c.metric} {c.comparator}" + (" (minor)" if c.minor_limit else "") for c in cols]
    rows = []
    for i, x in enumerate(table.ptv_cc):
        row = [f"{x:g}"]
        for c in cols:
            cell = f"{c.limit[i]:g}"
            if c.minor_limit is not None:
                cell += f" ({c.minor_limit[i]:g})"
            row.append(cell)
        rows.append(row)
    lines = [f"CONFORMALITY TABLE {table.id}: {table.title}"]
    lines += ["  " + r for r in _table(header, rows).splitlines()]
    lines.append("  linear interpolation in PTV volume between rows; end rows used outside the table")
    lines.append(f"  source: {table.source}")
    for c in cols:
        extra = "" if c.confirmed else "  [UNCONFIRMED]"
        lines.append(f"  {c.id} ({c.structure} {c.metric}){extra}" + (f": {c.note}" if c.note else ""))
    return lines


def _render_scheme(s: Any) -> list[str]:
    dose = f"{s.dose_gy[0]:g}-{s.dose_gy[1]:g}" if isinstance(s.dose_gy, tuple) else f"{s.dose_gy:g}"
    fx = f"{s.fractions[0]}-{s.fractions[1]}" if isinstance(s.fractions, tuple) else str(s.fractions)
    text = f"  {s.id}: {dose} Gy / {fx} fx"
    computed = s.bed10_gy()
    if computed is not None:
        text += f"  BED10 {computed:.1f} Gy"
        if s.bed10_stated_gy is not None:
            text += f" (document: {s.bed10_stated_gy:g})"
    out = [text]
    detail = "; ".join(t for t in (s.indication, s.evidence, _conditions(s.conditions)) if t)
    if detail:
        out.append(f"      {detail}")
    out.append(f"      source: {s.source}")
    return out


def _conditions(conditions: Any) -> str:
    parts = []
    for key, value in conditions.items():
        if isinstance(value, tuple):
            parts.append(f"{key} = {' or '.join(str(v) for v in value)}")
        elif isinstance(value, bool):
            parts.append(f"{key} = {'true' if value else 'false'}")
        else:
            parts.append(f"{key} {value}")
    return ", ".join(parts)


def _ranges(values: Sequence[int]) -> str:
    """1, 3, 4, 5, 8, 9, 10 -> '1, 3-5, 8-10'."""
    runs: list[list[int]] = []
    for v in sorted(values):
        if runs and v == runs[-1][-1] + 1:
            runs[-1].append(v)
        else:
            runs.append([v])
    return ", ".join(str(r[0]) if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    fmt = "  ".join(f"{{:<{w}}}" for w in widths[:-1]) + "  {}"
    lines = [fmt.format(*header), fmt.format(*["-" * w for w in widths])]
    lines += [fmt.format(*r) for r in rows]
    return "\n".join(line.rstrip() for line in lines)
