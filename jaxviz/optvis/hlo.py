"""Checks on the compiled ascent programs' optimised HLO: the slow patterns of docs/PERFORMANCE.md."""

from __future__ import annotations

import collections
import re


def hlo_computations(hlo_text: str) -> dict[str, str]:
    """``{computation name: its text}`` of an HLO module's text."""
    comps, name, lines = {}, None, []
    for line in hlo_text.splitlines():
        m = re.match(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$", line)
        if m and not line.startswith(" "):
            name, lines = m.group(1), []
        elif line.startswith("}") and name is not None:
            comps[name] = "\n".join(lines)
            name = None
        elif name is not None:
            lines.append(line)
    return comps


def check_compiled_program(hlo_text: str) -> dict:
    """Checks an optimised HLO module for the slow patterns of docs/PERFORMANCE.md.

    Returns a dict: ``scatter`` and ``select_and_scatter`` (op counts, want 0), ``convolutions`` (all)
    and ``loop_convolutions`` (inside the ascent loop), ``conv_layouts`` (``{dim_labels: count}``),
    ``reversed_kernel_convs`` (convolutions reading a reversed kernel), ``loop_reverses`` (kernel flips
    left inside the loop body: small copies, but they are redone every step), and ``ok``: no scatter of any
    kind and every convolution in the forward layout ``b01f_01io->b01f`` (NHWC·HWIO→NHWC) — i.e. the
    input gradient runs as a plain forward-style conv, as XLA:CPU's fast path needs.
    """
    comps = hlo_computations(hlo_text)
    scatter = len(re.findall(r"\bscatter\(", hlo_text))
    sas = len(re.findall(r"\bselect-and-scatter\(", hlo_text))
    convs = [line for line in hlo_text.splitlines() if re.search(r"\bconvolution\(", line)]
    layouts = collections.Counter(
        (m.group(1) if (m := re.search(r"dim_labels=([^,\s]+)", line)) else "?") for line in convs
    )
    reversed_k = sum("rhs_reversal" in line for line in convs)

    # Everything reachable from the bodies of while loops.
    callees = {n: set(re.findall(r"(?:calls|body|condition|to_apply|branch_computations)=\{?%([\w.\-]+)", t))
               for n, t in comps.items()}
    bodies = {b for t in comps.values() for b in re.findall(r"\bwhile\(.*?body=%([\w.\-]+)", t)}
    seen, todo = set(), list(bodies)
    while todo:
        n = todo.pop()
        if n not in seen and n in comps:
            seen.add(n)
            todo += callees.get(n, ())
    loop_text = "\n".join(comps[n] for n in seen)
    ok = scatter == 0 and sas == 0 and reversed_k == 0 and set(layouts) <= {"b01f_01io->b01f"}
    return {"scatter": scatter, "select_and_scatter": sas, "convolutions": len(convs),
            "loop_convolutions": len(re.findall(r"\bconvolution\(", loop_text)),
            "loop_reverses": len(re.findall(r"\breverse\(", loop_text)),
            "reversed_kernel_convs": reversed_k, "conv_layouts": dict(layouts), "ok": ok}
