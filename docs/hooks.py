"""MkDocs hooks (mkdocs.yml `hooks:`): the parts of the documentation that are generated at build time,
so that they cannot drift from the code.

- ``<!-- generated: configuration -->`` becomes the configuration reference: one section per config
  group of ``conf/``, a table of its options, and per option file its keys, values and YAML comments.
- ``<!-- generated: help experiments/<script>.py -->`` becomes the output of ``python <script> --help``
  (for a Hydra app, the part above its dump of the composed config, which the configuration page shows).

Plain functions of text and paths, so tests/test_docs.py checks them without building the site.
"""

from __future__ import annotations

import html
import re
import subprocess
import sys
import types
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CONF = ROOT / "conf"
MARKER = re.compile(r"<!-- generated: (?P<what>configuration|help (?P<script>[\w/.]+\.py)) -->")

# ------------------------------------------------------------------ reading one YAML file with its comments

# `key: value  # comment`; the key ends at the first colon followed by a space or the line's end, so
# values such as ${oc.env:A,B} or sqlite:///x keep their colons; a comment starts at " #".
KEY_LINE = re.compile(r"^(?P<indent> *)(?P<key>[^\s#:-][^:#]*?):(?=\s|$)\s*(?P<value>.*?)(?:\s+#\s?(?P<comment>.*))?$")
ITEM_LINE = re.compile(r"^(?P<indent> *)- (?P<value>.*?)(?:\s+#\s?(?P<comment>.*))?$")


@dataclass
class Row:
    key: str  # dotted path inside the file, e.g. early_stopping.patience
    value: str  # as written in the file ("" for a mapping that holds other keys)
    comment: str = ""
    indent: int = 0
    children: int = 0


@dataclass
class OptionFile:
    name: str
    header: list[str]  # the comment block above the first key, line by line ("  " indented: a command)
    is_global: bool  # `# @package _global_`: its keys are full paths, not under the group
    rows: list[Row] = field(default_factory=list)
    defaults: list[tuple[str, str]] = field(default_factory=list)  # the defaults list: (entry, comment)
    footer: str = ""  # comment lines after the last key (e.g. settings left commented out)

    @property
    def summary(self) -> str:
        """The header's first sentence."""
        text = " ".join(line for line in self.header if not line.startswith("  "))
        match = re.match(r"(.+?[.:;])(\s|$)", text)
        return (match[1] if match else text).rstrip(":;")


def read_option_file(path: Path) -> OptionFile:
    """The keys of a Hydra YAML file in file order, each with its comment: the one on its line, the
    comment lines indented under it (a continuation), and a comment block directly above it."""
    lines = path.read_text(encoding="utf-8").splitlines()
    header, pending, rows, defaults = [], [], [], []
    stack: list[Row] = []  # the mappings enclosing the current line
    last: Row | None = None  # the key whose comment a deeper-indented comment line continues
    in_defaults = False
    for line in lines:
        stripped = line.strip()
        if not stripped:
            last = None  # a blank line ends a comment's continuation
            continue
        if stripped.startswith("#"):
            raw = stripped[1:].removeprefix(" ").rstrip()
            text = raw.strip()
            column = len(line) - len(line.lstrip())
            if text.startswith("@package"):
                continue
            if not rows and not defaults and not in_defaults:
                header.append(raw)
            elif last is not None and last.comment and column > last.indent:
                last.comment += " " + text
            else:
                pending.append(text)
            continue
        item = ITEM_LINE.match(line)
        if item:
            if in_defaults:
                defaults.append((item["value"], item["comment"] or ""))
            elif stack:
                parent = stack[-1]
                parent.value = (parent.value + ", " if parent.value else "") + item["value"]
            continue
        match = KEY_LINE.match(line)
        if not match:
            continue  # a flow mapping continued on another line: none in conf/ today
        indent = len(match["indent"])
        while stack and stack[-1].indent >= indent:
            stack.pop()
        in_defaults = indent == 0 and match["key"] == "defaults"
        if in_defaults:
            pending = []
            continue
        key = ".".join(filter(None, [stack[-1].key if stack else "", match["key"].strip()]))
        comment = " ".join([*pending, match["comment"] or ""]).strip()
        row = Row(key, match["value"], comment, indent)
        pending = []
        if stack:
            stack[-1].children += 1
        rows.append(row)
        stack.append(row)
        last = row
    is_global = any(line.strip() == "# @package _global_" for line in lines)
    header = "\n".join(header).strip("\n").split("\n") if any(h.strip() for h in header) else []
    return OptionFile(path.stem, header, is_global, rows, defaults, " ".join(pending))


def leaf_keys(option: OptionFile) -> set[str]:
    """The dotted keys that hold a value (what yaml.safe_load would give, flattened)."""
    return {r.key for r in option.rows if r.children == 0}


# ------------------------------------------------------------------ the configuration reference


@dataclass
class Group:
    name: str
    default: str | None  # the option conf/config.yaml's defaults list picks; None: not picked by default
    comment: str
    options: list[OptionFile]
    in_defaults: bool  # listed in the defaults list: `group=option`; otherwise added with `+group=option`


def config_groups(conf: Path = CONF) -> tuple[OptionFile, list[Group]]:
    """conf/config.yaml and every group folder, in the defaults list's order, then the other folders."""
    top = read_option_file(conf / "config.yaml")
    listed = {}
    for entry, comment in top.defaults:
        name, _, default = entry.removeprefix("optional ").partition(":")
        if name.strip() != "_self_":
            listed[name.strip()] = (default.strip(), comment)
    folders = [p.name for p in sorted(conf.iterdir()) if p.is_dir() and any(p.glob("*.yaml"))]
    ordered = [n for n in listed if n in folders] + [n for n in folders if n not in listed]
    groups = []
    for name in ordered:
        default, comment = listed.get(name, (None, ""))
        options = [read_option_file(p) for p in sorted((conf / name).glob("*.yaml"))]
        groups.append(Group(name, None if default in (None, "null") else default, comment, options, name in listed))
    return top, groups


def _cell(text: str) -> str:
    """Text for a Markdown table cell: code spans kept, HTML and emphasis characters escaped, no pipes."""
    parts = re.split(r"(`[^`]*`)", text)
    out = []
    for part in parts:
        if part.startswith("`") and part.endswith("`") and len(part) > 1:
            out.append(f"<code>{html.escape(part[1:-1])}</code>")
        else:
            out.append(re.sub(r"([*_\\\[\]])", r"\\\1", html.escape(part, quote=False)))
    return "".join(out).replace("|", "&#124;")


def _code(value: str) -> str:
    return f"<code>{html.escape(value)}</code>".replace("|", "&#124;") if value else ""


def _prose(lines: list[str]) -> list[str]:
    """Comment lines as Markdown: indented lines (commands) as a code block, the rest as a paragraph."""
    out, paragraph, code = [], [], []
    for line in [*lines, ""]:
        if line.startswith("  ") and line.strip():
            if paragraph:
                out += [_cell(" ".join(paragraph)), ""]
                paragraph = []
            code.append(line.strip())
            continue
        if code:
            out += ["```bash", *code, "```", ""]
            code = []
        if line.strip():
            paragraph.append(line.strip())
        elif paragraph:  # a bare `#` line: a new paragraph
            out += [_cell(" ".join(paragraph)), ""]
            paragraph = []
    if paragraph:
        out += [_cell(" ".join(paragraph)), ""]
    return out


def option_table(option: OptionFile, prefix: str) -> list[str]:
    """One option file as a table: key as it is overridden on the command line, value, comment."""
    lines = ["| key | value | comment |", "|---|---|---|"]
    for entry, comment in option.defaults:
        lines.append(f"| (defaults list) | {_code(entry)} | {_cell(comment)} |")
    for row in option.rows:
        if row.children and not row.comment:
            continue  # a mapping that only holds other keys: its keys have rows
        key = row.key if option.is_global or not prefix else f"{prefix}.{row.key}"
        value = "" if row.children else row.value
        lines.append(f"| {_code(key)} | {_code(value)} | {_cell(row.comment)} |")
    return lines


def configuration_markdown(conf: Path = CONF) -> str:
    top, groups = config_groups(conf)
    out = [
        "## Groups at a glance",
        "",
        "| group | default | choose with | options |",
        "|---|---|---|---|",
    ]
    for g in groups:
        choose = f"{g.name}=OPTION" if g.in_defaults else f"+{g.name}=OPTION"
        names = ", ".join(f"[{o.name}](#{_anchor(g.name, o.name)})" for o in g.options)
        out.append(f"| [{g.name}](#{g.name}) | {_code(g.default or '')} | {_code(choose)} | {names} |")
    out += ["", "## conf/config.yaml {#config-yaml}", "", *_prose(top.header), *option_table(top, ""), ""]
    for g in groups:
        out += [f"## {g.name} {{#{g.name}}}", ""]
        if g.comment:
            out += [_cell(g.comment), ""]
        out += ["| option | what it is |", "|---|---|"]
        for o in g.options:
            mark = " (default)" if o.name == g.default else ""
            out.append(f"| [{o.name}](#{_anchor(g.name, o.name)}){mark} | {_cell(o.summary)} |")
        out.append("")
        for o in g.options:
            choose = f"{'' if g.in_defaults else '+'}{g.name}={o.name}"
            out += [f"### {choose} {{#{_anchor(g.name, o.name)}}}", ""]
            where = f"`conf/{g.name}/{o.name}.yaml`" + (" (package `_global_`: keys are full paths)" * o.is_global)
            out += [where, "", *_prose(o.header)]
            if o.rows or o.defaults:
                out += [*option_table(o, g.name), ""]
            if o.footer:
                out += [f"Commented out at the end of the file: {_cell(o.footer)}", ""]
    return "\n".join(out) + "\n"


def _anchor(group: str, option: str) -> str:
    return f"{group}-{option}".replace("_", "-")


# ------------------------------------------------------------------ --help texts

HYDRA_CONFIG_DUMP = "== Config =="


def help_text(script: str) -> str:
    """``python <script> --help`` as a user sees it; a failing entry point fails the build."""
    root = ROOT  # read at call time: tests point it at a folder of stand-in scripts
    done = subprocess.run(
        [sys.executable, str(root / script), "--help"], capture_output=True, text=True, timeout=300, cwd=root
    )
    if done.returncode != 0:
        raise RuntimeError(f"python {script} --help exited {done.returncode}: {done.stderr.strip()[-500:]}")
    text = done.stdout.split(HYDRA_CONFIG_DUMP, 1)[0].rstrip()
    if HYDRA_CONFIG_DUMP in done.stdout:
        text += "\n\n(then the composed config: see the Configuration page)"
    return text


# `mkdocs serve` loads this file again for every rebuild; the --help texts (seconds each) are kept in a
# module that outlives the reloads, and rerun only when a source they come from changed.
_kept = sys.modules.setdefault("titlesweep_docs_kept", types.ModuleType("titlesweep_docs_kept"))
_help_cache: dict[tuple[str, float], str] = vars(_kept).setdefault("help_texts", {})


def _sources_changed_at() -> float:
    """The newest modification of the code and config that a --help text is printed from."""
    folders = ("experiments", "lib", "benchmarks", "conf", "hydra_plugins")
    files = (p for f in folders for p in (ROOT / f).rglob("*") if p.suffix in (".py", ".yaml"))
    return max((p.stat().st_mtime for p in files), default=0.0)


def expand(markdown: str) -> str:
    """Every generated marker of one page replaced by its text (--help commands run in parallel)."""
    stamp = _sources_changed_at()
    wanted = {m["script"] for m in MARKER.finditer(markdown) if m["script"]}
    scripts = sorted(s for s in wanted if (s, stamp) not in _help_cache)
    with ThreadPoolExecutor(max_workers=4) as pool:
        _help_cache.update(zip(((s, stamp) for s in scripts), pool.map(help_text, scripts)))

    def replace(match: re.Match) -> str:
        if match["script"]:
            return f"```text\n$ python {match['script']} --help\n{_help_cache[match['script'], stamp]}\n```"
        return configuration_markdown()

    return MARKER.sub(replace, markdown)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return expand(markdown)
