"""Recall and precision of ``find_pii`` on the kinds corpus, per kind, per entity, per carrier.

A detection counts only with the exact span and entity of a gold value. A false detection is
charged to the kind it overlaps (a gold value's kind when it cut or mistyped one, a look-alike's
kind when it hit one) or, overlapping neither, to ``context:<carrier>`` (template text).

Per positive kind: recall = found / labelled, precision = found / (found + false detections
charged to that kind). Per look-alike kind: how many of its values were hit.

``python -m tests.redaction.score [tune|heldout|fresh|all] [--misses N]`` prints the tables.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from gateway.process.pii import Match, find_pii
from tests.redaction.kinds import Record, build


@dataclass
class Score:
    tp: Counter[str] = field(default_factory=Counter)  # by kind
    gold: Counter[str] = field(default_factory=Counter)  # by kind
    fp: Counter[str] = field(default_factory=Counter)  # by kind charged
    neg_seen: Counter[str] = field(default_factory=Counter)
    neg_hit: Counter[str] = field(default_factory=Counter)
    entity_tp: Counter[str] = field(default_factory=Counter)
    entity_gold: Counter[str] = field(default_factory=Counter)
    entity_found: Counter[str] = field(default_factory=Counter)
    carrier_tp: Counter[str] = field(default_factory=Counter)
    carrier_gold: Counter[str] = field(default_factory=Counter)
    carrier_fp: Counter[str] = field(default_factory=Counter)
    misses: list[str] = field(default_factory=list)
    false: list[str] = field(default_factory=list)

    @property
    def recall(self) -> float:
        return sum(self.tp.values()) / max(1, sum(self.gold.values()))

    @property
    def precision(self) -> float:
        found = sum(self.entity_found.values())
        return sum(self.tp.values()) / max(1, found)


def score(records: Iterable[Record], detect: Callable[[str], list[Match]] = find_pii) -> Score:
    s = Score()
    for rec in records:
        found = {(m.start, m.end, m.entity) for m in detect(rec.text)}
        gold = {(a, b, e): k for a, b, e, k in rec.gold}
        for (a, b, e), k in gold.items():
            s.gold[k] += 1
            s.entity_gold[e] += 1
            s.carrier_gold[rec.carrier] += 1
            if (a, b, e) in found:
                s.tp[k] += 1
                s.entity_tp[e] += 1
                s.carrier_tp[rec.carrier] += 1
            else:
                s.misses.append(f"missed {k} {rec.text[a:b]!r} [{rec.carrier}] in {rec.text!r}")
        hit_negs: set[tuple[int, int, str]] = set()
        for a, b, e in found:
            s.entity_found[e] += 1
            if (a, b, e) in gold:
                continue
            charged = next((k for (ga, gb, _e), k in gold.items() if a < gb and ga < b), None)
            if charged is None:
                n = next(((na, nb, nk) for na, nb, nk in rec.negatives if a < nb and na < b), None)
                if n is not None:
                    hit_negs.add(n)
                    charged = n[2]
            charged = charged or f"context:{rec.carrier}"
            s.fp[charged] += 1
            s.carrier_fp[rec.carrier] += 1
            s.false.append(f"false {e} {rec.text[a:b]!r} charged to {charged} [{rec.carrier}] in {rec.text!r}")
        for n in rec.negatives:
            s.neg_seen[n[2]] += 1
        for n in hit_negs:
            s.neg_hit[n[2]] += 1
    return s


def table(s: Score) -> str:
    lines = [
        f"overall: recall {s.recall:.4f}, precision {s.precision:.4f} "
        f"({sum(s.tp.values())} of {sum(s.gold.values())} found, {sum(s.entity_found.values())} detections)"
    ]
    lines.append(f"{'kind':16s} {'found':>6s} {'labelled':>8s} {'false':>6s} {'recall':>7s} {'precision':>9s}")
    for k in sorted(s.gold):
        p = s.tp[k] / max(1, s.tp[k] + s.fp[k])
        lines.append(f"{k:16s} {s.tp[k]:6d} {s.gold[k]:8d} {s.fp[k]:6d} {s.tp[k] / s.gold[k]:7.3f} {p:9.3f}")
    lines.append(f"{'entity':16s} {'found':>6s} {'labelled':>8s} {'detected':>8s} {'recall':>7s} {'precision':>9s}")
    for e in sorted(set(s.entity_gold) | set(s.entity_found)):
        lines.append(
            f"{e:16s} {s.entity_tp[e]:6d} {s.entity_gold[e]:8d} {s.entity_found[e]:8d} "
            f"{s.entity_tp[e] / max(1, s.entity_gold[e]):7.3f} {s.entity_tp[e] / max(1, s.entity_found[e]):9.3f}"
        )
    lines.append(f"{'look-alike':18s} {'values':>6s} {'hit':>4s}")
    for k in sorted(s.neg_seen):
        lines.append(f"{k:18s} {s.neg_seen[k]:6d} {s.neg_hit[k]:4d}")
    ctx_fp = {k: v for k, v in s.fp.items() if k.startswith("context:")}
    if ctx_fp:
        lines.append(f"false detections in template text: {ctx_fp}")
    lines.append(f"{'carrier':18s} {'found':>6s} {'labelled':>8s} {'false':>6s}")
    for c in sorted(s.carrier_gold):
        lines.append(f"{c:18s} {s.carrier_tp[c]:6d} {s.carrier_gold[c]:8d} {s.carrier_fp[c]:6d}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    splits = ["tune", "heldout", "fresh"] if not argv or argv[0] == "all" else [argv[0]]
    show = int(argv[argv.index("--misses") + 1]) if "--misses" in argv else 0
    for split in splits:
        records = build(split)
        s = score(records)
        print(
            f"== {split}: {len(records)} records, {sum(s.gold.values())} PII values, "
            f"{sum(s.neg_seen.values())} look-alikes"
        )
        print(table(s))
        for line in (s.misses + s.false)[:show]:
            print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
