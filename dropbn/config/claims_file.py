"""Claims files: the claims a report tests, as data (YAML, read with yaml.safe_load only).

    min_effects:                 # optional: per unit, the minimal effect of the power statements
      pp: {value: 0.2, text: 0.2 pp of accuracy}
    claims:
      - id: U1
        text: Combining dropout and batch norm beats dropout alone
        a: {reg: both}           # settings (config keys as in overrides; reg = the kind), a variant name
        b: {reg: dropout}        # the same, `baseline`, {each: [arm, arm]} or {matched: {key: value}}
        quantity: final_test_acc # QUANTITIES
        expect: greater          # greater | less | equivalent
        margin: 0.2              # optional (report units): TOST margin / minimal effect
        min_effect: 0.2          # optional: the minimal effect alone (for power)
        context: {data.train_size: 1000}   # optional: only runs with these settings
    trainability:                # optional: kind pairs tested on failed runs beyond the claims' own
      - {a: dropout, b: batchnorm, text: whose observation this tests}

An arm's settings name config keys (`optim.lr: 0.1`), the kind (`reg: both`; the run's
regularisation, as --baseline reg=... reads it) or a group (`data: mnist`); a list of values
means any of them (a list-valued key takes a list of lists). A string is a kind (`dropout`),
`baseline`, or a variant name as a study writes it (`reg=both,optim.lr=0.1`). `each` makes an
intersection-union test (a against every listed arm; p = the largest); `matched` pairs every
configuration of a with the one that differs from it only in the named settings (a value, or
{swap: [x, y]} for a list such as reg.order).

`load(paths)` reads and checks the files (one DropbnError naming file, claim id and field);
no files means DEFAULT, the article's claims. Pure: no pandas, no torch.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from ..base.errors import DropbnError
from ..record.identity import fmt_value

EXPECTS = {"greater": +1, "less": -1, "equivalent": 0}
GROUP_KEYS = {"data": "data.name", "model": "model.name", "optim": "optim.name"}
BASELINE = "baseline"
ARM_KEYS = ("each", "matched")
CLAIM_FIELDS = ("id", "text", "a", "b", "quantity", "expect", "margin", "min_effect", "context")
TOP_FIELDS = ("claims", "min_effects", "trainability")


DEFAULT_NAME = "configs/claims/article.yaml"  # how reports name the default file (no machine's path)


def default_file() -> Path:
    from .validation import CONFIG_DIR
    return CONFIG_DIR / "claims" / "article.yaml"


class ClaimFileError(DropbnError):
    """A claims file that cannot be used: one line naming the file, the claim id and the field."""


@dataclass(frozen=True)
class MinEffect:
    value: float     # in the analysis scale of the test (pp; epochs; fraction; ratio)
    text: str        # in report units


@dataclass(frozen=True)
class Arm:
    settings: tuple = ()     # ((key, [values]), ...): every key matches one of its values; key 'reg' = the kind
    baseline: bool = False
    each: tuple = ()         # (Arm, ...): intersection-union, a against every one
    matched: tuple = ()      # ((key, value or {"swap": [x, y]}), ...): a with these settings changed

    def data(self):
        if self.baseline:
            return BASELINE
        if self.each:
            return {"each": [a.data() for a in self.each]}
        if self.matched:
            return {"matched": dict(self.matched)}
        return {k: v[0] if len(v) == 1 else list(v) for k, v in self.settings}

    @property
    def kinds(self) -> tuple:
        """The kinds this arm names (its 'reg' values), () when it names none."""
        return tuple(next((v for k, v in self.settings if k == "reg"), ()))

    def describe(self) -> str:
        if self.baseline:
            return "the baseline"
        if self.each:
            return " and ".join(a.describe() for a in self.each)
        if self.matched:
            return "the same configuration with " + ", ".join(
                f"{v['swap'][0]} and {v['swap'][1]} swapped in {k}" if isinstance(v, dict) else f"{k}={_text(v)}"
                for k, v in self.matched)
        if len(self.settings) == 1 and self.settings[0][0] == "reg" and len(self.settings[0][1]) == 1:
            return repr(self.settings[0][1][0])
        return "{" + ", ".join(f"{k}: {' or '.join(_text(x) for x in v)}" for k, v in self.settings) + "}"


@dataclass(frozen=True)
class ClaimSpec:
    id: str
    text: str
    a: Arm
    b: Arm
    quantity: str
    expect: str                  # greater | less | equivalent
    min_effect: MinEffect
    margin: float | None = None  # equivalence margin (report units)
    context: tuple = ()          # settings every run of the claim has
    source: str = ""             # the file (not part of the claim's content)

    @property
    def sign(self) -> int:
        return EXPECTS[self.expect]

    def data(self) -> dict:
        d = {"id": self.id, "text": self.text, "a": self.a.data(), "b": self.b.data(), "quantity": self.quantity,
             "expect": self.expect}
        if self.margin is not None:
            d["margin"] = self.margin
        d["min_effect"] = {"value": self.min_effect.value, "text": self.min_effect.text}
        if self.context:
            d["context"] = Arm(self.context).data()
        return d

    @property
    def digest(self) -> str:
        return sha256(self.data())


@dataclass(frozen=True)
class TrainPair:
    a: str           # kinds
    b: str
    text: str

    def data(self) -> dict:
        return {"a": self.a, "b": self.b, "text": self.text}

    @property
    def digest(self) -> str:
        return sha256(self.data())


@dataclass(frozen=True)
class ClaimSet:
    claims: tuple
    trainability: tuple = ()
    min_effects: dict = field(default_factory=dict)
    sources: tuple = ()

    def content(self) -> dict:
        """The resolved claims as a claims file (what a registration records and hashes)."""
        return {"min_effects": {u: {"value": e.value, "text": e.text} for u, e in self.min_effects.items()},
                "claims": [c.data() for c in self.claims], "trainability": [t.data() for t in self.trainability]}

    def sha256(self) -> str:
        return sha256(self.content())


def sha256(obj) -> str:
    """Of the canonical JSON of obj (sorted keys, no whitespace): equal content, equal hash."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(text.encode()).hexdigest()


def _text(v) -> str:
    """A setting's value as run records print it (record.identity.fmt_value)."""
    return fmt_value(v)


# ---------------------------------------------------------------- parsing

# Every quantity a claim can test: (its report unit, its test), the one list. report/measures.MEASURES
# says how each is measured but failed_to_train, which report/measures.trainability tests.
QUANTITIES = {"final_test_acc": ("pp", "welch"), "final_test_acc_spread": ("spread", "spread"),
              "generalization_gap": ("pp", "welch"), "seconds_per_epoch": ("ratio", "log-welch"),
              "epochs_to_target": ("epochs", "rank"), "seconds_to_target": ("ratio", "rank"),
              "val_selected_test_acc": ("pp", "welch"), "final_train_acc": ("pp", "welch"),
              "variance_shift_ratio": ("ratio", "log-welch"), "failed_to_train": ("failed", "exact")}
TOST_TESTS = ("welch", "log-welch")  # `expect: equivalent` needs a Welch-tested quantity


def quantities() -> dict:
    """{quantity name: its unit}."""
    return {q: unit for q, (unit, _test) in QUANTITIES.items()}


def _list_key(key: str) -> bool:
    from .schema import RULES, Order, Widths
    return isinstance(RULES.get(key), (Order, Widths))


def _split_variant(name: str) -> list[str]:
    """'reg=both,model.hidden=[64,64]' -> ['reg=both', 'model.hidden=[64,64]'] (commas in brackets kept)."""
    parts, depth, cur = [], 0, ""
    for ch in name:
        depth += ch in "[{("
        depth -= ch in "]})"
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    return parts + [cur]


def _flatten(node: dict, prefix: str = "") -> list:
    out = []
    for k, v in node.items():
        if isinstance(v, dict) and str(k) not in ARM_KEYS and "swap" not in v:
            out += _flatten(v, f"{prefix}{k}.")
        else:
            out.append((f"{prefix}{k}", v))
    return out


def _settings(node, bad) -> tuple:
    """A settings mapping (or variant name) -> ((key, [values]), ...), every key and value checked."""
    from .schema import RULES
    if isinstance(node, str):
        if "=" not in node:
            return (("reg", [node.strip()]),)
        pairs = []
        for item in _split_variant(node):
            if "=" not in item:
                bad(f"{item!r} in variant name {node!r} is not key=value")
            k, v = item.split("=", 1)
            pairs.append((k.strip(), yaml.safe_load(v) if v.strip() else ""))
    elif isinstance(node, dict) and node:
        pairs = _flatten(node)
    else:
        bad("must be a mapping of config keys to values (e.g. {reg: both}), a variant name, or 'baseline'")
    out = []
    for key, v in pairs:
        key = GROUP_KEYS.get(key, key)
        if key != "reg" and key not in RULES:
            bad(f"unknown config key {key!r}")
        values = v if isinstance(v, list) and (not _list_key(key) or (v and isinstance(v[0], list))) else [v]
        if not values:
            bad(f"{key}: an empty list of values")
        rule = RULES.get(key)
        for x in values:
            if isinstance(x, (dict, set)) or (rule is not None and not rule.registry and not rule.ok(x)):
                bad(f"{key}={_text(x)}: {rule.allowed if rule is not None else 'not a kind name'}")
        out.append((key, list(values)))
    return tuple(out)


def _arm(node, bad, b: bool) -> Arm:
    if node == BASELINE:
        if not b:
            bad("arm a cannot be the baseline")
        return Arm(baseline=True)
    if isinstance(node, dict) and len(node) == 1 and next(iter(node)) in ARM_KEYS:
        if not b:
            bad(f"'{next(iter(node))}' is a form of arm b only")
        (kind, body), = node.items()
        if kind == "each":
            if not isinstance(body, list) or len(body) < 2:
                bad("each: must list at least two arms")
            return Arm(each=tuple(Arm(_settings(x, bad)) for x in body))
        if not isinstance(body, dict) or not body:
            bad("matched: must map config keys to the values b has instead of a's")
        from .schema import RULES
        changes = []
        for key, v in _flatten(body):
            if key not in RULES:
                bad(f"matched: unknown config key {key!r}")
            if isinstance(v, dict):
                sw = v.get("swap")
                if set(v) != {"swap"} or not (isinstance(sw, list) and len(sw) == 2 and all(isinstance(s, str) for s in sw)):
                    bad(f"matched: {key}: a value, or {{swap: [x, y]}} (two entries of a list to exchange)")
                v = {"swap": list(sw)}
            changes.append((key, v))
        return Arm(matched=tuple(changes))
    return Arm(_settings(node, bad))


def _number(v, bad, what: str, positive: bool = True) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)) or (positive and not v > 0):
        bad(f"{what}: must be a number > 0, not {v!r}")
    return float(v)


def parse(doc, where: str, defaults: dict | None = None) -> ClaimSet:
    """A claims file's content (yaml.safe_load) -> ClaimSet; `defaults`: min_effects of units it does not set."""
    def fail(msg: str):
        raise ClaimFileError(f"{where}: {msg}")

    if not isinstance(doc, dict) or not isinstance(doc.get("claims"), list):
        fail("not a claims file: expected a mapping with a 'claims' list (docs/claims.md)")
    for k in doc:
        if k not in TOP_FIELDS:
            fail(f"unknown field {k!r}; allowed: {', '.join(TOP_FIELDS)}")
    effects = dict(defaults or {})
    for unit, e in (doc.get("min_effects") or {}).items():
        if not isinstance(e, dict) or set(e) != {"value", "text"}:
            fail(f"min_effects: {unit}: expected {{value: number, text: words}}")
        effects[str(unit)] = MinEffect(_number(e["value"], fail, f"min_effects: {unit}: value"), str(e["text"]))
    units = quantities()
    claims, seen = [], set()
    for i, c in enumerate(doc["claims"]):
        cid = str(c.get("id", "")).strip() if isinstance(c, dict) else ""
        label = f"claim {cid}" if cid else f"claim #{i + 1}"

        def bad(msg, field_name="", _label=label):
            fail(f"{_label}: {field_name + ': ' if field_name else ''}{msg}")
        if not isinstance(c, dict):
            bad("must be a mapping (id, text, a, b, quantity, expect)")
        for k in c:
            if k not in CLAIM_FIELDS:
                bad(f"unknown field; allowed: {', '.join(CLAIM_FIELDS)}", str(k))
        for k in ("id", "text", "a", "b", "quantity", "expect"):
            if c.get(k) in (None, ""):
                bad("missing", k)
        if cid.startswith("T") and cid[1:].isdigit():
            bad("T<n> names the trainability rows; choose another id", "id")
        if cid in seen:
            bad("used twice", "id")
        seen.add(cid)
        q = c["quantity"]
        if q not in units:
            bad(f"unknown quantity {q!r}; allowed: {', '.join(units)}", "quantity")
        if c["expect"] not in EXPECTS:
            bad(f"{c['expect']!r}: allowed: {', '.join(EXPECTS)}", "expect")
        a = _arm(c["a"], lambda m: bad(m, "a"), b=False)
        b = _arm(c["b"], lambda m: bad(m, "b"), b=True)
        margin = None if c.get("margin") is None else _number(c["margin"], bad, "margin")
        unit = units[q]
        if c["expect"] == "equivalent":
            if QUANTITIES[q][1] not in TOST_TESTS:
                bad(f"equivalent needs a quantity tested by Welch's t-test (TOST), not {q}", "expect")
            if margin is None:
                bad("equivalent needs a margin (the TOST margin, in report units)", "margin")
            if b.each:
                bad("equivalent cannot be tested against 'each' (an intersection-union test of one direction)", "b")
        own = c.get("min_effect", margin)
        if isinstance(own, dict):  # as a registration records it
            if set(own) != {"value", "text"}:
                bad("expected a number, or {value: number, text: words}", "min_effect")
            eff = MinEffect(_number(own["value"], bad, "min_effect: value"), str(own["text"]))
        elif own is not None:
            v = _number(own, bad, "min_effect")
            eff = MinEffect(v, f"{v:g}{UNIT_WORDS.get(unit, ' ' + unit)}")
        elif unit in effects:
            eff = effects[unit]
        else:
            bad(f"no min_effect and no min_effects entry for unit {unit!r}", "min_effect")
        ctx = _settings(c["context"], lambda m: bad(m, "context")) if c.get("context") is not None else ()
        claims.append(ClaimSpec(cid, str(c["text"]).strip(), a, b, q, c["expect"], eff, margin, ctx, where))
    pairs = []
    for i, t in enumerate(doc.get("trainability") or []):
        if not (isinstance(t, dict) and set(t) == {"a", "b", "text"} and all(isinstance(t[k], str) for k in t)):
            fail(f"trainability #{i + 1}: expected {{a: kind, b: kind, text: whose observation}}")
        pairs.append(TrainPair(t["a"], t["b"], t["text"].strip()))
    return ClaimSet(tuple(claims), tuple(pairs), effects, (where,))


UNIT_WORDS = {"pp": " pp", "epochs": " epoch(s)", "ratio": " (fraction of the ratio)", "spread": "x ratio of sds",
              "failed": " (fraction of runs failing)"}


def read(path) -> dict:
    p = Path(path)
    try:
        return yaml.safe_load(p.read_text())
    except OSError as e:
        raise ClaimFileError(f"{p}: cannot read the claims file ({e.strerror or type(e).__name__})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ClaimFileError(f"{p}: not valid YAML{at} ({getattr(e, 'problem', None) or type(e).__name__})") from None


def merge(sets: list) -> ClaimSet:
    """Several files as one set: ids must differ across files; min_effects of later files win."""
    claims, pairs, effects, sources, where = [], [], {}, [], {}
    for s in sets:
        for c in s.claims:
            if c.id in where:
                raise ClaimFileError(f"{c.source}: claim {c.id}: id: also in {where[c.id]}")
            where[c.id] = c.source
            claims.append(c)
        pairs += [t for t in s.trainability if t not in pairs]
        effects.update(s.min_effects)
        sources += list(s.sources)
    return ClaimSet(tuple(claims), tuple(pairs), effects, tuple(sources))


def load(paths=()) -> ClaimSet:
    """The claims of these files (DEFAULT when none), checked; units a file gives no minimal effect
    take the default file's."""
    default = default_file()
    base = parse(read(default), str(default)).min_effects
    paths = [Path(p) for p in paths] or [default]
    return merge([parse(read(p), DEFAULT_NAME if p == default else str(p), base) for p in paths])
