"""The narrative of a stage summary, chosen by rules over the numbers of its runs
(docs/gridlines.md §6).

The rules, applied to the stage's own runs (reference rows are only compared):

- instability emerged when any run is ``diverged``, ``spiking`` or ``collapsed``;
- diverged / spiking arm -> mitigate with AGC or the workload's own mitigations (its
  ``mitigations``, e.g. grid lines' LayerScale), whichever the arm does not use yet and its
  architecture accepts (:func:`workload_mitigations`); a lower lr when it uses them all;
- collapsed arm -> a smaller LayerScale init (when it has one), the workload's mitigations, or
  a lower lr;
- out of memory -> fewer blocks and a channel cap, or a larger device;
- error -> fix it first; stagnated -> more epochs or a larger scale; interrupted -> rerun;
- a run that ended as its arm was meant to (``expect``, e.g. a control that must diverge) gets
  no mitigation: it is named as the failure the other arms are held against;
- every run stable -> sweep seeds (``--sk-seeds 5``) while an arm has fewer than 5, else more
  depth; the Wilson bound on 0 failures says what the seeds rule out.

A recommendation never asks to change a field that the run's ``--sk-scale`` set (its
``scale_changes``): an edit to the arm would be overridden by the scale, so it says to run as
written (``--sk-scale none``) or at ``--sk-scale full`` instead, naming the field.

Arms are told apart by the recipe fields that differ between them
(:func:`~stabilitykit.report.collate.differing_fields`). Arms are ranked (:func:`ranking`) by
the workload's primary metric, and by best val loss only when every arm's val loss measures the
same thing (one workload, one loss: :func:`~stabilitykit.report.collate.loss_basis`); a
comparison with a reference of another loss or workload gives the two numbers, no judgement.

Every sentence quotes the records' numbers: verdict evidence, grad norms, losses and the
workload's metrics as its ``workload`` block declares them (label, direction, the trivial
predictor's floor beside the metric: ``rel L2 0.12 (floor 0.97)``). Comparisons with a reference
use best val loss and the workload's primary metric, each called worse or better by its direction
and gate tolerance. A record without a ``workload`` block gets the engine's numbers only.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from stabilitykit.judge.verdict import VerdictKind
from stabilitykit.record.declared import DEFAULT_RULES, DeclaredMetric, MetricRule
from stabilitykit.report.collate import (
    ArmSummary,
    arm_rows,
    basis_text,
    differing_fields,
    key_metrics,
    loss_basis,
    loss_groups,
    recipe_summary,
    representative,
    row_workload,
    scale_changes_of,
    wilson_interval,
)

INSTABILITY: tuple[str, ...] = ("diverged", "spiking", "collapsed")
SWEEP_SEEDS = 5  # seeds per arm before "all stable" means "go deeper" rather than "sweep seeds"
STABLE = VerdictKind.STABLE.value


def stage_title(stage: str) -> str:
    """``stage_b`` -> ``Stage B``; ``stage_a/control`` -> ``Stage A `control```."""
    stage, _, arm = stage.partition("/")
    head, _, rest = stage.partition("_")
    title = f"{head.capitalize()} {rest.upper() if len(rest) <= 2 else rest}" if rest else stage
    return f"{title} `{arm}`" if arm else title


def fmt(x: Any, digits: int = 4) -> str:
    """A number in ``digits`` significant figures (whole below 1e7: ``39927``); ``–`` when
    missing."""
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:.0f}" if 10**digits <= abs(x) < 1e7 else f"{x:.{digits}g}"
    return str(x)


def fmt_count(x: Any) -> str:
    """An int with thousands separators (``4,400,000,000``)."""
    return f"{x:,}" if isinstance(x, int) else fmt(x)


def fmt_rate(arm: ArmSummary) -> str:
    """``2/5 = 40% (95% CI 12–77%)``; ``–`` when no run was judged."""
    if not arm.n:
        return "–"
    low, high = arm.failure_ci
    return f"{arm.failures}/{arm.n} = {arm.failure_rate:.0%} (95% CI {low:.0%}–{high:.0%})"


def arm_verdicts(arm: ArmSummary) -> str:
    """``stable`` for one run; ``stable ×4, diverged ×1`` over seeds."""
    if len(arm.runs) == 1:
        return next(iter(arm.verdicts))
    return ", ".join(f"{k} ×{c}" for k, c in arm.verdicts.items())


def plural(n: int, word: str) -> str:
    return f"{n} {word}" if n == 1 else f"{n} {word}s"


def recipe_text(row: Mapping[str, Any]) -> str:
    """``hybrid, 8 blocks, clip norm 1`` from a row's arm columns."""
    parts = [row.get("architecture") or "?"]
    if row.get("fno_blocks") is not None:
        parts.append(f"{row['fno_blocks']} blocks")
    if row.get("max_channels") is not None:
        parts.append(f"channels ≤ {row['max_channels']}")
    clip = row.get("clip")
    if clip == "none":
        parts.append("no clip")
    elif clip:
        parts.append(f"clip {clip} {fmt(row.get('clip_value'))}")
    if row.get("layerscale_init") is not None:
        parts.append(f"LayerScale {row['layerscale_init']:g}")
    return ", ".join(parts)


# --- the narrative rules -----------------------------------------------------------------------


def metric_text(metric: DeclaredMetric, values: Mapping[str, Any]) -> str | None:
    """``rel L2 0.12 (floor 0.97)``: the metric's label and value, its floor beside it when it
    declares one; ``None`` when ``values`` has no number for it."""
    value = values.get(metric.name)
    if value is None or isinstance(value, bool):
        return None
    floor = values.get(metric.floor) if metric.floor else None
    shown = f" (floor {fmt(floor)})" if floor is not None and not isinstance(floor, bool) else ""
    return f"{metric.title} {fmt(value)}{shown}"


def _primary_numbers(row: Mapping[str, Any]) -> list[tuple[str, Any]]:
    """The primary metric and its trivial-predictor floor, as ``(text, value)``."""
    primary = row_workload(row).primary
    if primary is None:
        return []
    label = primary.title.replace("{", "{{").replace("}", "}}")
    out = [(label + " {}", row.get(primary.name))]
    if primary.floor:
        out.append(("vs trivial-predictor floor {}", row.get(primary.floor)))
    return out


def _kind_numbers(kind: str, row: Mapping[str, Any]) -> str:
    """The numbers behind ``kind`` in ``row``, for the narrative."""
    r = row
    candidates: list[tuple[str, Any]] = []
    if kind in ("diverged", "spiking"):
        candidates = [
            ("first non-finite value at step {}", r.get("nonfinite_step")),
            ("pre-clip grad norm max {}", r.get("grad_norm_preclip_max")),
            ("at step {}", r.get("grad_norm_preclip_max_step")),
            ("median {}", r.get("grad_norm_preclip_median")),
            ("post-clip max {}", r.get("grad_norm_postclip_max")),
        ]
    elif kind == "collapsed":
        std = row_workload(r).collapse_std
        if std is not None:
            candidates += [("prediction std {}", r.get(std[0])), ("vs truth {}", r.get(std[1]))]
        candidates += _primary_numbers(r)
        candidates += [
            ("best val loss {}", r.get("best_val_loss")),
            ("at epoch {}", r.get("best_val_epoch")),
            ("final {}", r.get("final_val_loss")),
        ]
    elif kind == "stagnated":
        candidates = [
            ("initial val loss {}", r.get("initial_val_loss")),
            ("best {}", r.get("best_val_loss")),
            *_primary_numbers(r),
        ]
    elif kind in ("out_of_memory", "error"):
        candidates = [("{} parameters", r.get("parameters"))]
    elif kind == "interrupted":
        candidates = [
            ("last epoch {}", r.get("epochs_completed")),
            ("best val loss so far {}", r.get("best_val_loss")),
        ]
    return ", ".join(
        text.format(fmt_count(v))
        for text, v in candidates
        if v is not None and not isinstance(v, bool)
    )


def first_rows(rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first row of each arm in ``rows`` (arms by name and family hash), in order."""
    seen: dict[tuple[Any, Any], dict[str, Any]] = {}
    for r in rows:
        seen.setdefault((r["arm_name"], r.get("family_hash")), r)
    return list(seen.values())


def arm_recipe(row: Mapping[str, Any], rows: Sequence[dict[str, Any]]) -> str:
    """What tells ``row``'s arm apart from the other arms of ``rows`` (the fields that differ:
    ``lr 0.01, clip none, clip_value default``); with nothing to tell apart (one arm, or arms
    alike but for the name) its :func:`recipe_text`."""
    fields = differing_fields(first_rows(rows))
    return recipe_summary(row, fields) if fields else recipe_text(row)


def arm_finding(arm: ArmSummary, rows: Sequence[dict[str, Any]]) -> str:
    """One sentence on ``arm``: what tells it apart from the stage's other arms (its recipe
    when it is alone), each failure kind with its seeds, evidence and numbers, the stable seeds'
    medians, and the failure rate when it has several seeds."""
    members = arm_rows(arm, rows)
    head = f"`{arm.arm_name}` ({arm_recipe(members[0], rows)})"
    total = len(members)
    parts = []
    for kind, count in arm.verdicts.items():
        if kind == STABLE:
            continue
        first = next(r for r in members if r["verdict"] == kind)
        reason = first["verdict_reason"] or kind
        numbers = _kind_numbers(kind, first)
        seeds = ", ".join(fmt(r["seed"]) for r in members if r["verdict"] == kind)
        parts.append(
            f"{kind} in {count} of {plural(total, 'run')} (seed {seeds}): {reason}"
            + (f"; {numbers}" if numbers else "")
        )
    stable = arm.verdicts.get(STABLE, 0)
    if stable:
        m = arm.median
        over = " (medians over the stable seeds)" if stable > 1 else ""
        declared = [metric_text(d, m) for d in key_metrics(row_workload(members[0]))]
        shown = "".join(f", {t}" for t in declared if t)
        parts.append(
            f"stable in {stable} of {plural(total, 'run')}{over}: best val loss "
            f"{fmt(m.get('best_val_loss'))}{shown}, pre-clip grad norm median "
            f"{fmt(m.get('grad_norm_preclip_median'))}, p99 {fmt(m.get('grad_norm_preclip_p99'))}"
            f", max {fmt(m.get('grad_norm_preclip_max'))}" + _postclip(m)
        )
    spikes = spike_text(members)
    if spikes:
        parts.append(spikes)
    if arm.n > 1:
        parts.append(f"failure rate {fmt_rate(arm)}")
    return f"{head}: " + "; ".join(parts) + "."


_SIGNAL_WORDS = {"loss": "loss", "grad_norm_preclip": "pre-clip grad norm"}


def spike_text(members: Sequence[Mapping[str, Any]]) -> str:
    """The worst spike over ``members`` (their rows' ``spikes``: largest value over its limit):
    its signal, value against its running mean, step, seed and top layer, and whether the run
    recovered (any verdict but ``diverged``: docs/criteria.md, "Divergence"); with how many
    runs had spikes. Empty when none did (or their records predate spike detection)."""
    spiked = [
        (r, s["worst"])
        for r in members
        if isinstance(s := r.get("spikes"), Mapping) and isinstance(s.get("worst"), Mapping)
    ]
    if not spiked:
        return ""
    row, worst = max(spiked, key=lambda t: t[1].get("ratio") or 0.0)
    signal = _SIGNAL_WORDS.get(str(worst.get("signal")), str(worst.get("signal")))
    value, baseline = worst.get("value"), worst.get("baseline")
    times = (
        f", {value / baseline:.3g} x its running mean {fmt(baseline)}"
        if (isinstance(value, (int, float)) and isinstance(baseline, (int, float)) and baseline > 0)
        else ""
    )
    text = f"worst spike: {signal} {fmt(value)}{times} at step {fmt_count(worst.get('step'))}"
    if len(members) > 1:
        text += f" (seed {fmt(row.get('seed'))})"
    top = worst.get("top_layer")
    if isinstance(top, (list, tuple)) and len(top) == 2:
        text += f", top layer {top[0]} (grad norm {fmt(top[1])})"
    if row.get("verdict") == VerdictKind.DIVERGED.value:
        text += "; the run did not recover"
    else:
        text += "; the run recovered (not diverged)"
    if len(members) > 1:
        text += f"; {len(spiked)} of {plural(len(members), 'run')} had spikes"
    return text


def _postclip(values: Mapping[str, Any]) -> str:
    """``; post-clip median 1, max 1``, or nothing when the run logged no post-clip norm."""
    median, peak = values.get("grad_norm_postclip_median"), values.get("grad_norm_postclip_max")
    if median is None and peak is None:
        return ""
    return f"; post-clip median {fmt(median)}, max {fmt(peak)}"


def _delta(value: Any, ref: Any, relative: bool = False) -> str:
    if value is None or ref is None:
        return ""
    diff = value - ref
    if relative and ref > 0 and value / ref > 10:
        return f"×{fmt(value / ref, 3)}"
    if relative and ref:
        return f"{diff / abs(ref):+.0%}"
    return f"{diff:+.3g}"


def judgement(value: Any, ref: Any, direction: str, rule: MetricRule | None = None) -> str:
    """``worse``, ``better`` or ``within tolerance`` (of ``rule``, the gate's rule of the metric);
    without a rule by the sign alone (``same`` when equal); empty when a number is missing."""
    if value is None or ref is None or direction not in ("lower", "higher"):
        return ""
    if rule is not None:
        if rule.is_worse(value, rule.limit(ref)):
            return "worse"
        return "better" if rule.is_better(value, ref) else "within tolerance"
    if value == ref:
        return "same"
    return "worse" if (value > ref) == (direction == "lower") else "better"


def _compared(
    label: str,
    value: Any,
    ref: Any,
    relative: bool,
    direction: str | None,
    rule: Any = None,
    floor: Any = None,
) -> str:
    """``best val loss 0.0241 vs 0.0138 (+75%, worse)``; with ``floor`` (the arm's trivial
    predictor value): ``rel L2 0.3 (floor 0.97) vs 0.12 (+150%, worse)``."""
    notes = [_delta(value, ref, relative)]
    if direction is not None:
        notes.append(judgement(value, ref, direction, rule))
    shown = ", ".join(n for n in notes if n)
    at = f" (floor {fmt(floor)})" if floor is not None and value is not None else ""
    return f"{label} {fmt(value)}{at} vs {fmt(ref)}" + (f" ({shown})" if shown else "")


def comparison(
    stage: str, ref: Mapping[str, Any], arm: ArmSummary, rows: Sequence[dict[str, Any]]
) -> str:
    """``arm`` against a reference row: best val loss and the workload's primary metric, each
    with its delta (relative for losses and relatively-toleranced metrics, else absolute) and
    worse / better by the metric's direction and gate tolerance, then the pre-clip grad norm
    max; flags a different data hash, scale or workload."""
    values = representative(arm, rows)
    member = arm_rows(arm, rows)[0]
    decl, ref_decl = row_workload(member), row_workload(ref)
    parts = []
    loss = values.get("best_val_loss"), ref.get("best_val_loss")
    basis, ref_basis = loss_basis(member), loss_basis(ref)
    if any(v is not None for v in loss) and basis != ref_basis:
        parts.append(
            f"best val loss {fmt(loss[0])} vs {fmt(loss[1])} (not comparable: "
            f"{basis_text(basis)} vs {basis_text(ref_basis)})"
        )
    elif any(v is not None for v in loss):
        rule = DEFAULT_RULES.get("best_val_loss")
        parts.append(_compared("best val loss", *loss, True, "lower", rule))
    primary = decl.primary
    pair = (values.get(primary.name), ref.get(primary.name)) if primary is not None else ()
    if primary is not None and any(v is not None for v in pair):
        relative = primary.abs_tol is None and primary.rel_tol is not None
        floor = values.get(primary.floor) if primary.floor else None
        rule = primary.rule()
        parts.append(_compared(primary.title, *pair, relative, primary.direction, rule, floor))
    grads = values.get("grad_norm_preclip_max"), ref.get("grad_norm_preclip_max")
    if any(v is not None for v in grads):
        parts.append(_compared("pre-clip grad norm max", *grads, True, None))
    post = values.get("grad_norm_postclip_max"), ref.get("grad_norm_postclip_max")
    if any(v is not None for v in post):
        parts.append(_compared("post-clip max", *post, True, None))
    caveats = []
    if ref.get("data_hash") and member.get("data_hash") and ref["data_hash"] != member["data_hash"]:
        caveats.append(f"different data: {member['data_hash']} vs {ref['data_hash']}")
    if ref.get("scale") != member.get("scale"):
        caveats.append(f"different scale: {member.get('scale')} vs {ref.get('scale')}")
    if decl.name != ref_decl.name:
        caveats.append(f"different workload: {decl.name or '–'} vs {ref_decl.name or '–'}")
    elif basis[1] != ref_basis[1]:
        caveats.append(f"different loss: {basis[1] or '?'} vs {ref_basis[1] or '?'}")
    caveat = f" ({'; '.join(caveats)})" if caveats else ""
    return (
        f"{stage_title(stage)} `{arm.arm_name}` ({arm_verdicts(arm)}) vs "
        f"{stage_title(ref['reference'])} ({ref['verdict']}){caveat}: "
        + (", ".join(parts) if parts else "no numbers to compare")
        + "."
    )


def headline(title: str, arms: Sequence[ArmSummary], rows: Sequence[dict[str, Any]]) -> str:
    """Did instability emerge: which arms, which verdicts in how many runs."""
    if not rows:
        return f"{title}: no run of this stage was recorded."
    unstable = [a for a in arms if any(k in INSTABILITY for k in a.verdicts)]
    if unstable:
        what = "; ".join(
            f"`{a.arm_name}` ("
            + ", ".join(f"{k} {c}/{len(a.runs)}" for k, c in a.verdicts.items() if k != STABLE)
            + (", as meant" if _all_as_meant(a, rows) else "")
            + ")"
            for a in unstable
        )
        return f"Instability emerged in {len(unstable)} of {plural(len(arms), 'arm')}: {what}."
    if all(r["verdict"] == STABLE for r in rows):
        peak = max((r.get("grad_norm_preclip_max") or 0.0 for r in rows), default=0.0)
        return (
            f"No instability emerged: all {plural(len(rows), 'run')} of "
            f"{plural(len(arms), 'arm')} stayed stable (every loss finite, pre-clip grad norm "
            f"at most {fmt(peak)}, no collapse)."
        )
    other = "; ".join(
        f"`{a.arm_name}` ("
        + ", ".join(f"{k} {c}/{len(a.runs)}" for k, c in a.verdicts.items() if k != STABLE)
        + ")"
        for a in arms
        if set(a.verdicts) - {STABLE}
    )
    return (
        "No instability emerged (no divergence, gradient spike or collapse), but not every run "
        f"passed: {other}."
    )


def as_meant(row: Mapping[str, Any]) -> bool:
    """The run ended with the verdict its arm was meant to end with (``expect``)."""
    return bool(row.get("expect")) and row.get("expect") == row.get("verdict")


def _all_as_meant(arm: ArmSummary, rows: Sequence[dict[str, Any]]) -> bool:
    failed = [r for r in arm_rows(arm, rows) if r.get("verdict") != STABLE]
    return bool(failed) and all(as_meant(r) for r in failed)


def _first(members: Sequence[dict[str, Any]], kinds: Sequence[str]) -> dict[str, Any]:
    return next(r for r in members if r["verdict"] in kinds)


def _scaled(row: Mapping[str, Any], field: str) -> tuple[Any, Any] | None:
    """``(as written, as run)`` when the run's scale set ``field``, else ``None``."""
    pair = (scale_changes_of(row) or {}).get(field)
    return (pair[0], pair[1]) if pair is not None else None


def _as_written(row: Mapping[str, Any], fields: Sequence[str]) -> str:
    """For the ``fields`` a recommendation changes that the run's scale set: `` The `ci` scale
    sets `fno_blocks` (4 as written, 2 as run): an edit of the arm is overridden by it, so make
    the change in the arm and run it as written (`--sk-scale none`) or at `--sk-scale full`.``;
    empty when the scale set none of them."""
    scaled = [(f, pair) for f in dict.fromkeys(fields) if (pair := _scaled(row, f)) is not None]
    if not scaled:
        return ""
    scale = row.get("scale") or "?"
    what = ", ".join(f"`{f}` ({fmt(a)} as written, {fmt(b)} as run)" for f, (a, b) in scaled)
    full = " or at `--sk-scale full`" if scale != "full" else ""
    return (
        f" The `{scale}` scale sets {what}: an edit of the arm is overridden by the scale, so make "
        f"the change in the arm and run it as written (`--sk-scale none`){full}."
    )


def workload_mitigations(row: Mapping[str, Any]) -> list[tuple[str, list[str]]]:
    """``(text, fields it sets)`` for each of the row's workload's own mitigations (its record's
    ``workload`` block) that the run's arm can take and does not have yet: the architecture it
    switches to (or the arm's own) accepts every model field it sets, and the arm neither has
    every change already nor sets one of its model fields itself. An older record declares
    none."""
    decl = row_workload(row)
    architectures = decl.architectures
    own = row.get("architecture")
    model_fields = {k for defaults in architectures.values() for k in defaults}
    out = []
    for m in decl.mitigations:
        changes = m["changes"]
        target = changes.get("architecture", own)
        accepted = architectures.get(target)
        if accepted is None or any(k in model_fields and k not in accepted for k in changes):
            continue
        defaults = architectures.get(own) or {}
        has_all = all(
            (defaults.get(k) if row.get(k) is None and k in model_fields else row.get(k)) == v
            for k, v in changes.items()
        )
        sets_one = any(row.get(k) is not None for k in changes if k in model_fields)
        if has_all or sets_one:
            continue
        what = ", ".join(f"`{k}={v!r}`" for k, v in changes.items())
        out.append((f"{m['text']} ({what})", list(changes)))
    return out


def _mitigate(arm: ArmSummary, row: Mapping[str, Any], kind: str) -> str:
    options, fields = [], []
    if row.get("clip") not in ("agc", "agc_unit"):
        options.append("AGC (`clip='agc'`, `clip_value=0.01`)")
        fields += ["clip", "clip_value"]
    for text, changes in workload_mitigations(row):
        options.append(text)
        fields += changes
    if not options and row.get("lr") is not None:
        options.append(f"a lower lr (`lr` {row['lr']:g} → {row['lr'] / 10:g})")
        fields.append("lr")
    numbers = _kind_numbers(kind, row)
    return (
        f"`{arm.arm_name}` {kind}" + (f" ({numbers})" if numbers else "") + ": add mitigation "
        "arms beside it: " + " or ".join(options or ["a lower lr"]) + "." + _as_written(row, fields)
    )


def _after_collapse(arm: ArmSummary, row: Mapping[str, Any]) -> str:
    ls, lr = row.get("layerscale_init"), row.get("lr")
    options, fields = [], []
    if ls is not None:
        options.append(f"a smaller LayerScale init (`layerscale_init` {ls:g} → {ls / 10:g})")
        fields.append("layerscale_init")
    for text, changes in workload_mitigations(row):
        options.append(text)
        fields += changes
    if lr is not None:
        options.append(f"a lower lr (`lr` {lr:g} → {lr / 10:g})")
    numbers = _kind_numbers("collapsed", row)
    return (
        f"`{arm.arm_name}` collapsed to the trivial predictor"
        + (f" ({numbers})" if numbers else "")
        + ": the prediction carries no structure; try "
        + " or ".join(options or ["a lower lr"])
        + "."
        + _as_written(row, [*fields, "lr"])
    )


def _after_oom(arm: ArmSummary, row: Mapping[str, Any]) -> str:
    blocks = row.get("fno_blocks")
    depth = f"`fno_blocks` {blocks} → {max(1, blocks - 2)}" if blocks else "fewer blocks"
    cap = "" if row.get("max_channels") else " with a channel cap (`max_channels=512`)"
    size = f" ({fmt_count(row['parameters'])} parameters)" if row.get("parameters") else ""
    return (
        f"`{arm.arm_name}` ran out of memory{size}: fall back to {depth}{cap}, or run it on a "
        "device with more memory (`--sk-device cuda`)."
        + _as_written(row, ["fno_blocks", "max_channels"])
    )


def _after_stagnation(arm: ArmSummary, row: Mapping[str, Any]) -> str:
    """More epochs, or a larger scale; when the run's scale set ``epochs``, an edit of the arm's
    ``epochs`` would be overridden: run it as written (``--sk-scale none``) or at full scale."""
    epochs, scale = row.get("epochs"), row.get("scale")
    why = row["verdict_reason"] or _kind_numbers("stagnated", row)
    scaled = _scaled(row, "epochs")
    if scaled is None:
        options = [f"more epochs (`epochs` {epochs} → {2 * epochs})" if epochs else "more epochs"]
        larger = {"smoke": "ci", "proxy": "ci", "ci": "full"}.get(scale)
        if larger:
            options.append(f"a larger scale (`--sk-scale {larger}`)")
        return f"`{arm.arm_name}` stagnated ({why}): train it with " + " or ".join(options) + "."
    written, run = scaled
    numbers = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scaled)
    if numbers and written > run:
        longer = f"run it as written with `--sk-scale none` (`epochs` {fmt(written)})"
    elif numbers:
        longer = (
            f"set `epochs` above {fmt(run)} in the arm (e.g. {fmt(2 * run)}) and run it as "
            "written with `--sk-scale none`"
        )
    else:
        longer = "set `epochs` in the arm and run it as written with `--sk-scale none`"
    full = " or at `--sk-scale full`" if scale != "full" else ""
    return (
        f"`{arm.arm_name}` stagnated ({why}) after {fmt(run)} epochs, which the `{scale}` scale "
        f"set (`epochs` {fmt(written)} as written → {fmt(run)} as run; an edit of the arm's "
        f"`epochs` is overridden by the scale): {longer}{full}."
    )


def _when_all_stable(arms: Sequence[ArmSummary], rows: Sequence[dict[str, Any]]) -> str:
    fewest = min(a.n for a in arms)
    upper = wilson_interval(0, fewest)[1]
    bound = (
        f"0 failures in {plural(fewest, 'seed')} per arm still allows a failure rate up to "
        f"{upper:.0%} (Wilson 95% upper bound)"
    )
    if fewest < SWEEP_SEEDS:
        return f"Every run was stable, but {bound}: sweep seeds next (`--sk-seeds {SWEEP_SEEDS}`)."
    blocks = [(r["fno_blocks"], r["arm_name"]) for r in rows if r.get("fno_blocks") is not None]
    note = ""
    if blocks:
        depth, name = max(blocks)
        deeper = f"`{name}` at `fno_blocks` {depth} → {2 * depth}"
        note = _as_written(next(r for r in rows if r["arm_name"] == name), ["fno_blocks"])
    else:
        deeper = "a deeper variant of the deepest arm"
    return f"Every run was stable and {bound}: go deeper next, e.g. {deeper}, same seeds.{note}"


def _ranked(values: Sequence[tuple[ArmSummary, float]], rule: MetricRule | None) -> str:
    """``a 0.93, then b 0.925 = c 0.925``, best first (ties joined by ``=``); with the gate's
    rule, a note when every arm is within its tolerance of the best (not told apart)."""
    parts: list[str] = []
    for i, (arm, value) in enumerate(values):
        sep = "" if i == 0 else (" = " if value == values[i - 1][1] else ", then ")
        parts.append(f"{sep}`{arm.arm_name}` {fmt(value)}")
    text = "".join(parts)
    best, worst = values[0][1], values[-1][1]
    if rule is not None and best != worst and not rule.is_worse(worst, rule.limit(best)):
        text += " (all within the gate's tolerance of the best: not told apart)"
    return text


def ranking(arms: Sequence[ArmSummary], rows: Sequence[dict[str, Any]]) -> list[str]:
    """How the stage's arms (two or more) rank over their stable runs, best first: by each
    workload's primary metric among that workload's arms, then by best val loss only when
    every ranked arm's val loss measures the same thing (one workload and one loss); else a
    sentence saying why it is not ranked. Arms without a stable run are named, not ranked."""
    if len(arms) < 2:
        return []
    ranked = [a for a in arms if a.verdicts.get(STABLE)]
    out = []
    seeded = any(a.verdicts[STABLE] > 1 for a in ranked)
    over = "medians over the stable seeds" if seeded else ""
    by_workload: dict[str | None, list[ArmSummary]] = {}
    for a in ranked:
        by_workload.setdefault(row_workload(arm_rows(a, rows)[0]).name, []).append(a)
    for name, group in by_workload.items():
        primary = row_workload(arm_rows(group[0], rows)[0]).primary
        if primary is None or primary.direction not in ("lower", "higher"):
            continue
        values = [(a, a.median.get(primary.name)) for a in group]
        values = [(a, v) for a, v in values if v is not None]
        if len(values) < 2:
            continue
        values.sort(key=lambda t: t[1], reverse=primary.direction == "higher")
        out.append(
            f"By {primary.title} {'↑' if primary.direction == 'higher' else '↓'} (the {name} "
            f"workload's primary metric{'; ' + over if over else ''}), best first: "
            + _ranked(values, primary.rule())
            + "."
        )
    groups = loss_groups([arm_rows(a, rows)[0] for a in ranked])
    if len(groups) > 1:
        out.append(
            "Best val loss is not ranked: each arm's val loss is its own training loss, and "
            "these differ ("
            + "; ".join(
                f"{basis_text(b)}: " + ", ".join(f"`{r['arm_name']}`" for r in members)
                for b, members in groups.items()
            )
            + ")."
        )
    else:
        values = [(a, a.median.get("best_val_loss")) for a in ranked]
        values = sorted(((a, v) for a, v in values if v is not None), key=lambda t: t[1])
        if len(values) >= 2:
            out.append(
                f"By best val loss ↓{' (' + over + ')' if over else ''}, best first: "
                + _ranked(values, DEFAULT_RULES.get("best_val_loss"))
                + "."
            )
    unranked = [a for a in arms if not a.verdicts.get(STABLE)]
    if out and unranked:
        out.append(
            "Not ranked (no stable run): " + ", ".join(f"`{a.arm_name}`" for a in unranked) + "."
        )
    return out


def recommend(arms: Sequence[ArmSummary], rows: Sequence[dict[str, Any]]) -> list[str]:
    """The next experiments, by the rules in this module's docstring, most severe first."""
    if not rows:
        return ["Run the stage's arms: there is nothing to judge yet."]
    steps: list[tuple[int, str]] = []
    for arm in arms:
        members = arm_rows(arm, rows)
        meant = [r for r in members if as_meant(r)]
        if meant:
            steps.append(
                (
                    6,
                    f"`{arm.arm_name}` ended {meant[0]['verdict']} in "
                    f"{plural(len(meant), 'run')}, as it was meant to: it shows the failure the "
                    "other arms are held against, and needs no fix.",
                )
            )
        kinds = {r["verdict"] for r in members if not as_meant(r)}
        spike = next((k for k in ("diverged", "spiking") if k in kinds), None)
        if spike:
            steps.append((0, _mitigate(arm, _first(members, [spike]), spike)))
        if "collapsed" in kinds:
            steps.append((1, _after_collapse(arm, _first(members, ["collapsed"]))))
        if "out_of_memory" in kinds:
            steps.append((2, _after_oom(arm, _first(members, ["out_of_memory"]))))
        if "error" in kinds:
            reason = _first(members, ["error"])["verdict_reason"]
            steps.append(
                (
                    3,
                    f"`{arm.arm_name}` stopped with an error ({reason}): fix it and rerun; an "
                    "errored run says nothing about stability.",
                )
            )
        if "stagnated" in kinds:
            steps.append((4, _after_stagnation(arm, _first(members, ["stagnated"]))))
        if "interrupted" in kinds:
            runs = ", ".join(r["run"] for r in members if r["verdict"] == "interrupted")
            steps.append((5, f"`{arm.arm_name}` was interrupted ({runs}): rerun it."))
    steps.sort(key=lambda s: s[0])
    return [text for _, text in steps] or [_when_all_stable(arms, rows)]
