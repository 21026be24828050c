"""Read KVM's CPUID capability classes from a Linux source tree.

`read_tree(TREE)` yields, for every CPUID bit KVM initialises in that tree, the catalogue's class
(plain, emulated, runtime, passthrough, synthesized, scattered, x86_64, vendor, aliased; see
kvmharness/cpu/features.py), read from:

  * arch/x86/kvm/cpuid.c: the capability initialisation in each of its historical forms:
      - 6.14 on: kvm_cpu_cap_init(CPUID_x, F(A), EMULATED_F(B), ...) in kvm_set_cpu_caps(), from
        7.0 in kvm_initialize_cpu_caps(); the initializer macro is the class;
      - 6.1 to 6.13: kvm_cpu_cap_mask()/kvm_cpu_cap_init_kvm_defined(CPUID_x, F(A) | SF(B) |
        f_gbpages | BIT(n) | 0 /* C */), then kvm_cpu_cap_set()/kvm_cpu_cap_check_and_set()/
        `kvm_cpu_caps[CPUID_x] |= BIT(n)`: F = plain, SF = scattered, f_gbpages/f_lm/f_xfd =
        x86_64, an F() of a CPUID.1:EDX feature in CPUID_8000_0001_EDX = aliased, an
        unconditional set of a bit outside the mask = emulated, a set guarded by the kernel's own
        flag for that feature (or check_and_set) = synthesized, a set guarded by raw CPUID =
        passthrough, a bit kvm_update_cpuid_runtime() rewrites and the mask leaves out = runtime,
        a bit only vmx.c/svm.c/sev.c set = vendor;
      - the open-coded ones of __do_cpuid_func(): leaf 6's ARAT (emulated), the KVM PV leaf's
        KVM_FEATURE_* list (emulated), 6.1's CPUID 0x80000007 EDX[8] (scattered);
  * arch/x86/kvm/reverse_cpuid.h: KVM-only words and where each word is in CPUID;
  * arch/x86/include/asm/cpufeature.h and cpufeatures.h: the kernel's words and bit numbers.

A tree that cannot be read is one UsageError line naming the file and what was expected.
Nothing here runs or copies kernel code: it reads names and bit numbers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import UsageError

REG_NAMES = {"CPUID_EAX": "eax", "CPUID_EBX": "ebx", "CPUID_ECX": "ecx", "CPUID_EDX": "edx"}
INIT_MACROS = {"F": "plain", "SCATTERED_F": "scattered", "X86_64_F": "x86_64",
               "EMULATED_F": "emulated", "SYNTHESIZED_F": "synthesized",
               "PASSTHROUGH_F": "passthrough", "ALIASED_1_EDX_F": "aliased",
               "VENDOR_F": "vendor", "RUNTIME_F": "runtime"}
X86_64_VARS = {"f_gbpages": "GBPAGES", "f_lm": "LM", "f_xfd": "XFD"}
KVM_CPUID_FEATURES = 0x40000001
VENDOR_FILES = ("arch/x86/kvm/vmx/vmx.c", "arch/x86/kvm/svm/svm.c", "arch/x86/kvm/svm/sev.c")

Ref = tuple[int, int, str, int]          # (leaf, subleaf, reg, bit)


@dataclass
class TreeClasses:
    """What one tree says: its release, the class and macro name of every bit KVM initialises."""

    path: str
    version: tuple[int, int, int]
    classes: dict[Ref, str] = field(default_factory=dict)
    names: dict[Ref, str] = field(default_factory=dict)        # X86_FEATURE_/KVM_FEATURE_ name
    cpuinfo: dict[Ref, str] = field(default_factory=dict)      # "/proc/cpuinfo" name if any
    words: set = field(default_factory=set)                    # (leaf, subleaf, reg) KVM builds
    init_function: str = ""

    @property
    def release(self) -> tuple[int, int]:
        return self.version[:2]

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))


def with_source(profile, tree, kernel=None):
    """`profile` judged with the classes read from `tree` and, unless `kernel` (--kernel) says
    otherwise, the other rules of the tree's release (model/releases.py)."""
    from dataclasses import replace
    from ..model.releases import parse_release
    classes = read_tree(tree)
    rules = parse_release(kernel if kernel is not None else classes.version_text)
    return replace(profile, source=classes, kernel=rules.rules,
                   release=profile.release or rules.given)


# -- reading files ----------------------------------------------------------------------------
def _read(tree: Path, rel: str, what: str) -> str:
    p = tree / rel
    try:
        return p.read_text(errors="replace")
    except FileNotFoundError:
        raise UsageError(f"{p}: missing; expected {what}") from None
    except OSError as e:
        raise UsageError(f"{p}: cannot read ({e.strerror}); expected {what}") from None


def _strip_comments(text: str) -> str:
    text = re.sub(r"/\*.*?\*/", lambda m: " " * 0 + " ", text, flags=re.S)
    return re.sub(r"//[^\n]*", "", text)


def _version(tree: Path) -> tuple[int, int, int]:
    """VERSION.PATCHLEVEL.SUBLEVEL from the top Makefile; a partial tree without one (the 7.0.0
    reference holds only KVM's folders) may be named by its release ('7.0.0')."""
    if not (tree / "Makefile").is_file():
        m = re.fullmatch(r"v?(\d+)\.(\d+)(?:\.(\d+))?", tree.name)
        if m:
            return int(m.group(1)), int(m.group(2)), int(m.group(3) or 0)
    text = _read(tree, "Makefile", "the kernel's top Makefile (VERSION, PATCHLEVEL, SUBLEVEL), "
                 "or a tree folder named by its release")
    vals = {}
    for key in ("VERSION", "PATCHLEVEL", "SUBLEVEL"):
        m = re.search(rf"^{key}\s*=\s*(\d*)", text, re.M)
        if not m:
            raise UsageError(f"{tree / 'Makefile'}: expected a '{key} = N' line")
        vals[key] = int(m.group(1) or 0)
    return vals["VERSION"], vals["PATCHLEVEL"], vals["SUBLEVEL"]


def _kernel_words(tree: Path) -> dict[str, int]:
    """enum cpuid_leafs (cpufeature.h): word name -> index."""
    rel = "arch/x86/include/asm/cpufeature.h"
    text = _strip_comments(_read(tree, rel, "enum cpuid_leafs"))
    m = re.search(r"enum\s+cpuid_leafs\s*\{(.*?)\}", text, re.S)
    if not m:
        raise UsageError(f"{tree / rel}: expected 'enum cpuid_leafs {{ CPUID_1_EDX = 0, ... }}'")
    return _enum(m.group(1), {})


def _enum(body: str, known: dict[str, int]) -> dict[str, int]:
    out: dict[str, int] = {}
    n = -1
    for item in (x.strip() for x in body.split(",")):
        if not item:
            continue
        name, _, value = (s.strip() for s in item.partition("="))
        if value:
            n = int(value) if value.isdigit() else known.get(value, out.get(value, -1000))
        else:
            n += 1
        out[name] = n
    return out


@dataclass
class _Layout:
    words: dict[str, tuple[int, int, str]]       # word name -> (leaf, subleaf, reg)
    word_index: dict[str, int]                   # word name -> index (kernel and KVM-only)
    features: dict[str, Ref]                     # X86_FEATURE_ name (no prefix) -> ref
    cpuinfo: dict[str, str]                      # name -> "/proc/cpuinfo" string


def _layout(tree: Path, extra: str = "") -> _Layout:
    kernel_words = _kernel_words(tree)
    rel = "arch/x86/kvm/reverse_cpuid.h"
    raw = _read(tree, rel, "reverse_cpuid[] and the KVM-only feature words")
    text = _strip_comments(raw)
    ncapints = max(kernel_words.values()) + 1 if kernel_words else 0
    m = re.search(r"enum\s+kvm_only_cpuid_leafs\s*\{(.*?)\}", text, re.S)
    word_index = dict(kernel_words)
    if m:
        word_index.update(_enum(m.group(1), {"NCAPINTS": ncapints}))
    table = re.search(r"reverse_cpuid\s*\[\s*\]\s*=\s*\{(.*?)\};", text, re.S)
    if not table:
        raise UsageError(f"{tree / rel}: expected 'static const struct cpuid_reg "
                         "reverse_cpuid[] = {...}'")
    words = {}
    for name, fn, idx, reg in re.findall(
            r"\[\s*(\w+)\s*\]\s*=\s*\{\s*(0x[0-9a-fA-F]+|\d+)\s*,\s*(\d+)\s*,\s*(CPUID_E[A-D]X)\s*\}",
            table.group(1)):
        words[name] = (int(fn, 0), int(idx), REG_NAMES[reg])
    if not words:
        raise UsageError(f"{tree / rel}: expected '[CPUID_1_EDX] = {{1, 0, CPUID_EDX}}' entries "
                         "in reverse_cpuid[]")
    index_word = {v: k for k, v in word_index.items()}
    features: dict[str, Ref] = {}
    cpuinfo: dict[str, str] = {}
    rel_f = "arch/x86/include/asm/cpufeatures.h"
    ftext = _read(tree, rel_f, "#define X86_FEATURE_NAME (WORD*32+BIT) lines")
    for name, w, bit, rest in re.findall(
            r"^#define\s+X86_FEATURE_(\w+)\s+\(\s*(\d+)\s*\*\s*32\s*\+\s*(\d+)\s*\)([^\n]*)",
            ftext, re.M):
        word = index_word.get(int(w))
        if word in words:
            leaf, sub, reg = words[word]
            features[name] = (leaf, sub, reg, int(bit))
        q = re.search(r'/\*\s*"([^"]*)"', rest)
        if q and q.group(1):
            cpuinfo[name] = q.group(1)
    if not features:
        raise UsageError(f"{tree / rel_f}: expected '#define X86_FEATURE_FPU ( 0*32+ 0)' lines")
    # KVM-only bits: KVM_X86_FEATURE_X (scattered kernel features, translated) or X86_FEATURE_X.
    for prefix, name, word, bit in re.findall(
            r"^#define\s+(KVM_)?X86_FEATURE_(\w+)\s+KVM_X86_FEATURE\(\s*(\w+)\s*,\s*(\d+)\s*\)",
            text, re.M):
        if word in words:
            leaf, sub, reg = words[word]
            features[name] = (leaf, sub, reg, int(bit))
    # 6.1's KVM_X86_FEATURE_PSFD-style definitions by number (in cpuid.c there).
    for name, w, bit in re.findall(
            r"^#define\s+KVM_X86_FEATURE_(\w+)\s+\(\s*(\w+)\s*\*\s*32\s*\+\s*(\d+)\s*\)",
            text + "\n" + extra, re.M):
        word = w if w in words else index_word.get(int(w)) if w.isdigit() else None
        if word in words:
            leaf, sub, reg = words[word]
            features[name] = (leaf, sub, reg, int(bit))
    return _Layout(words, word_index, features, cpuinfo)


# -- the capability initialisation -----------------------------------------------------------------
_INIT_FUNCTIONS = ("kvm_initialize_cpu_caps", "kvm_set_cpu_caps")


def _function_body(text: str, names, where: str) -> tuple[str, str]:
    for name in names:
        m = re.search(rf"^[A-Za-z_][\w \t\*]*\b{name}\s*\([^;{{}}]*\)\s*\{{", text, re.M)
        if m:
            depth, i = 1, m.end()
            while depth and i < len(text):
                depth += {"{": 1, "}": -1}.get(text[i], 0)
                i += 1
            return name, text[m.end():i - 1]
    raise UsageError(f"{where}: expected a definition of {' or '.join(names)}()")


def _calls(body: str, name: str):
    """(start, args) of every call to `name` in body, args with balanced parentheses."""
    for m in re.finditer(rf"\b{name}\s*\(", body):
        depth, i = 1, m.end()
        while depth and i < len(body):
            depth += {"(": 1, ")": -1}.get(body[i], 0)
            i += 1
        yield m.start(), body[m.end():i - 1]


def _conditional(body: str, pos: int) -> str | None:
    """The condition guarding the statement at `pos` ('' if in a nested block whose condition
    is not at hand), or None when the statement is unconditional at the function's top level."""
    depth = body[:pos].count("{") - body[:pos].count("}")
    start = max(body.rfind(";", 0, pos), body.rfind("{", 0, pos), body.rfind("}", 0, pos))
    head = body[start + 1:pos]
    m = re.search(r"\bif\s*\((.*)\)\s*$", head, re.S)
    if m:
        return m.group(1)
    if depth > 0:
        opener = body.rfind("{", 0, pos)
        stmt = body[max(body.rfind(";", 0, opener), body.rfind("}", 0, opener)) + 1:opener]
        m = re.search(r"\bif\s*\((.*)\)\s*$", stmt, re.S)
        return m.group(1) if m else ""
    return None


def _feature_arg(arg: str) -> str | None:
    m = re.fullmatch(r"\s*X86_FEATURE_(\w+)\s*", arg)
    return m.group(1) if m else None


def read_tree(tree) -> TreeClasses:
    """The classes a kernel tree gives every bit KVM initialises (see the module docstring)."""
    tree = Path(tree)
    if not tree.is_dir():
        raise UsageError(f"{tree}: not a directory; expected a Linux source tree")
    version = _version(tree)
    rel = "arch/x86/kvm/cpuid.c"
    raw = _read(tree, rel, "KVM's CPUID code (kvm_set_cpu_caps or kvm_initialize_cpu_caps)")
    text = _strip_comments(raw)
    lay = _layout(tree, text)
    where = str(tree / rel)
    fn, body = _function_body(text, _INIT_FUNCTIONS, where)
    out = TreeClasses(str(tree), version, init_function=fn)

    def ref_of(name: str, word: str | None = None) -> Ref:
        if name in lay.features:
            return lay.features[name]
        raise UsageError(f"{where}: {fn}() names X86_FEATURE_{name}, which neither "
                         "cpufeatures.h nor reverse_cpuid.h defines")

    def put(ref: Ref, klass: str, name: str) -> None:
        out.classes[ref] = klass
        out.names[ref] = name
        if name in lay.cpuinfo:
            out.cpuinfo[ref] = lay.cpuinfo[name]
        out.words.add(ref[:3])

    def word_of(arg: str) -> tuple[str, tuple[int, int, str]]:
        w = arg.strip()
        if w not in lay.words:
            raise UsageError(f"{where}: {fn}() initialises word {w}, which reverse_cpuid[] "
                             "(reverse_cpuid.h) does not place")
        return w, lay.words[w]

    # 6.14+: kvm_cpu_cap_init(CPUID_x, MACRO(NAME), ...)
    for _, args in _calls(body, "kvm_cpu_cap_init"):
        word, place = word_of(args.split(",", 1)[0])
        out.words.add(place)
        for macro, name in re.findall(r"\b([A-Z0-9_]+)\s*\(\s*(\w+)\s*\)", args.split(",", 1)[1]):
            if macro not in INIT_MACROS:
                raise UsageError(f"{where}: kvm_cpu_cap_init({word}, ...) uses {macro}({name}); "
                                 f"expected one of {', '.join(INIT_MACROS)}")
            klass = INIT_MACROS[macro]
            if klass == "aliased":
                leaf, sub, reg, bit = ref_of(name)
                put((place[0], place[1], place[2], bit), klass, name)
            else:
                put(ref_of(name), klass, name)

    # 6.1-6.13: masks with F()/SF()/f_gbpages/BIT(n)
    x86_64_vars = dict(X86_64_VARS)
    for var, name in re.findall(r"\bunsigned int\s+(f_\w+)\s*=\s*F\(\s*(\w+)\s*\)", body):
        x86_64_vars[var] = name
    masked: set[Ref] = set()
    for call in ("kvm_cpu_cap_mask", "kvm_cpu_cap_init_kvm_defined"):
        for _, args in _calls(body, call):
            word, place = word_of(args.split(",", 1)[0])
            out.words.add(place)
            expr = args.split(",", 1)[1]
            for macro, name in re.findall(r"\b(F|SF|__feature_bit)\s*\(\s*(?:KVM_X86_FEATURE_)?(\w+)\s*\)",
                                          expr):
                leaf, sub, reg, bit = ref_of(name)
                if (leaf, sub, reg) != place:
                    if place == lay.words.get("CPUID_8000_0001_EDX") and \
                            (leaf, sub, reg) == lay.words.get("CPUID_1_EDX"):
                        ref = (*place, bit)
                        put(ref, "aliased", name)
                        masked.add(ref)
                        continue
                    raise UsageError(f"{where}: {call}({word}, ...) masks {macro}({name}), "
                                     "a bit of another word")
                ref = (leaf, sub, reg, bit)
                put(ref, "scattered" if macro == "SF" else "plain", name)
                masked.add(ref)
            for var in re.findall(r"\b(f_\w+)\b", expr):
                if var in x86_64_vars:
                    ref = ref_of(x86_64_vars[var])
                    put(ref, "x86_64", x86_64_vars[var])
                    masked.add(ref)
            for bit in re.findall(r"\bBIT\(\s*(\d+)\s*\)", expr):
                ref = (*place, int(bit))
                put(ref, "plain", _name_at(lay, ref))
                masked.add(ref)

    # sets after the masks / inits
    def set_bit(ref: Ref, name: str, cond: str | None, checked: bool) -> None:
        if checked:
            put(ref, "synthesized", name)
        elif cond is None:               # always set, whatever the host: KVM emulates it
            put(ref, "emulated", name)
        elif re.search(r"\bcpuid_e[a-d]x\s*\(", cond):
            put(ref, "passthrough", name)
        elif out.classes.get(ref) in (None, "plain") and _guarded_by_itself(cond, name, ref, lay) \
                and not re.search(r"\bkvm_initialize_cpu_caps|kvm_cpu_cap_init\b", body):
            put(ref, "synthesized", name)

    for start, args in _calls(body, "kvm_cpu_cap_set"):
        name = _feature_arg(args)
        if name:
            set_bit(ref_of(name), name, _conditional(body, start), False)
    for start, args in _calls(body, "kvm_cpu_cap_check_and_set"):
        name = _feature_arg(args)
        if name:
            set_bit(ref_of(name), name, _conditional(body, start), True)
    for m in re.finditer(r"kvm_cpu_caps\s*\[\s*(\w+)\s*\]\s*\|=\s*BIT\(\s*(\d+)\s*\)", body):
        word, place = word_of(m.group(1))
        ref = (*place, int(m.group(2)))
        set_bit(ref, _name_at(lay, ref), _conditional(body, m.start()), False)

    # runtime bits (mask era): rewritten by kvm_update_cpuid_runtime, left out of the mask
    _, runtime_body = _function_body(
        text, ("__kvm_update_cpuid_runtime", "kvm_update_cpuid_runtime"), where)
    for name in re.findall(r"cpuid_entry_change\([^,]+,\s*X86_FEATURE_(\w+)", runtime_body):
        ref = ref_of(name)
        if ref not in out.classes:
            put(ref, "runtime", name)

    # vendor bits (mask era): set only by the vendor modules
    for vrel in VENDOR_FILES:
        p = tree / vrel
        if not p.is_file():
            continue
        vtext = _strip_comments(p.read_text(errors="replace"))
        for name in re.findall(r"kvm_cpu_cap_(?:set|check_and_set)\(\s*X86_FEATURE_(\w+)\s*\)", vtext):
            ref = lay.features.get(name)
            if ref is not None and ref not in out.classes:
                put(ref, "vendor", name)

    _open_coded(text, where, lay, out, put)
    return out


def _name_at(lay: _Layout, ref: Ref) -> str:
    for name, r in lay.features.items():
        if r == ref:
            return name
    return f"{ref[0]:#x}.{ref[1]}.{ref[2]}.{ref[3]}"


def _guarded_by_itself(cond: str, name: str, ref: Ref, lay: _Layout) -> bool:
    """A set guarded by the kernel's own flag for the feature (boot_cpu_has/cpu_feature_enabled
    of the same name, or of a Linux-defined flag of that name elsewhere: LFENCE_RDTSC)."""
    tested = re.findall(r"(?:boot_cpu_has|cpu_feature_enabled|static_cpu_has)\s*\(\s*X86_FEATURE_(\w+)\s*\)",
                        cond)
    if "!" in cond.replace("!=", ""):
        return False
    if name in tested:
        return True
    from .features import by_ref               # BIT(n) forms: the catalogue's name for the bit
    from .cpuid import BitRef
    f = by_ref(BitRef(*ref))
    return f is not None and f.name in (t.lower() for t in tested)


def _open_coded(text: str, where: str, lay: _Layout, out: TreeClasses, put) -> None:
    """Bits __do_cpuid_func() builds itself rather than from kvm_cpu_caps."""
    _, body = _function_body(text, ("__do_cpuid_func",), where)
    # leaf 6: EAX is a constant ("allow ARAT")
    m = re.search(r"case\s+6\s*:(.*?)break;", body, re.S)
    if m:
        k = re.search(r"entry->eax\s*=\s*(0x[0-9a-fA-F]+|\d+)\s*;", m.group(1))
        if k:
            value = int(k.group(1), 0)
            for bit in range(32):
                if value >> bit & 1:
                    ref = (6, 0, "eax", bit)
                    put(ref, "emulated", _name_at(lay, ref))
    # the KVM PV features leaf
    m = re.search(r"case\s+KVM_CPUID_FEATURES\s*:(.*?)break;", body, re.S)
    if not m:
        raise UsageError(f"{where}: __do_cpuid_func() has no 'case KVM_CPUID_FEATURES:'")
    pv = _pv_bits()
    for name in re.findall(r"1\s*<<\s*KVM_FEATURE_(\w+)", m.group(1)):
        if name not in pv:
            raise UsageError(f"{where}: KVM_FEATURE_{name} in the PV leaf is not a feature the "
                             "catalogue knows (kvm_para.h bit unknown)")
        ref = (KVM_CPUID_FEATURES, 0, "eax", pv[name])
        put(ref, "emulated", name)
    out.words.add((KVM_CPUID_FEATURES, 0, "eax"))
    # 6.1's CPUID 0x80000007: EDX[8] (invariant TSC) masked against the host
    m = re.search(r"case\s+0x80000007\s*:(.*?)break;", body, re.S)
    if m:
        for shift in re.findall(r"entry->edx\s*&=\s*\(\s*1\s*<<\s*(\d+)\s*\)", m.group(1)):
            ref = (0x80000007, 0, "edx", int(shift))
            put(ref, "scattered", _name_at(lay, ref))


def _pv_bits() -> dict[str, int]:
    """KVM_FEATURE_* bit numbers (uapi kvm_para.h, not in the trees): from the catalogue."""
    from .features import FEATURES, KVM_CPUID_FEATURES as PV
    return {f.name.upper(): f.bit for f in FEATURES if f.leaf == PV}


# -- class differences (`kvmharness catalogue`) -------------------------------------------------------
@dataclass(frozen=True)
class ClassSide:
    """One side of a comparison: a tree's classes or the committed catalogue's for a release."""

    label: str                                 # "TREE (7.2.8)" or "catalogue 7.2"
    classes: dict


def catalogue_side(kernel) -> ClassSide:
    from ..model.releases import parse_release
    from .features import FEATURES
    release = parse_release(kernel)
    k = release.rules
    label = f"catalogue {k[0]}.{k[1]}" + (f" ({release.note})" if release.note else "")
    return ClassSide(label, {(f.leaf, f.subleaf, f.reg, f.bit): f.kvm_class(k)
                             for f in FEATURES if f.tracked(k)})


def tree_side(tree) -> ClassSide:
    t = tree if isinstance(tree, TreeClasses) else read_tree(tree)
    return ClassSide(f"{t.path} ({t.version_text})", dict(t.classes))


def class_sides(sources, kernels) -> tuple[ClassSide, ClassSide]:
    """Two sides from --source TREE and --kernel X.Y options; one tree alone is compared with
    the catalogue of its release."""
    sources, kernels = list(sources or ()), list(kernels or ())
    if len(sources) + len(kernels) > 2:
        raise UsageError("catalogue: at most two sides (--source TREE or --kernel X.Y)")
    if not sources and len(kernels) < 2:
        raise UsageError("catalogue: give --source TREE (with --source B, --kernel X.Y, or alone "
                         "for its own release), or two --kernel")
    trees = [read_tree(s) for s in sources]             # each tree is parsed once
    sides = [tree_side(t) for t in trees]
    if len(trees) == 1 and not kernels:
        sides.append(catalogue_side(trees[0].version_text))
    sides += [catalogue_side(k) for k in kernels]
    return sides[0], sides[1]


def class_differences(a: ClassSide, b: ClassSide) -> list[dict]:
    """Bits whose class differs between a and b ('untracked' where a side does not track it)."""
    from .cpuid import BitRef
    from .features import by_ref
    out = []
    for ref in sorted(set(a.classes) | set(b.classes)):
        ca, cb = a.classes.get(ref, "untracked"), b.classes.get(ref, "untracked")
        if ca != cb:
            f = by_ref(BitRef(*ref))
            out.append({"feature": f.name if f is not None else None,
                        "ref": f"{ref[0]:#x}.{ref[1]}.{ref[2]}.{ref[3]}", "a": ca, "b": cb})
    return out


def render_class_differences(a: ClassSide, b: ClassSide, diffs: list[dict]) -> str:
    lines = [f"a: {a.label}", f"b: {b.label}"]
    if not diffs:
        return "\n".join(lines + ["no class differences"]) + "\n"
    width = max(len(d["feature"] or "(not catalogued)") for d in diffs)
    for d in diffs:
        lines.append(f"{d['feature'] or '(not catalogued)':<{width}}  {d['ref']:<22} "
                     f"{d['a']} -> {d['b']}")
    lines.append(f"{len(diffs)} bit(s) differ")
    return "\n".join(lines) + "\n"
