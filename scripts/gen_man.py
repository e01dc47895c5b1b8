"""Generate evlog's man pages from the CLI definition, so they cannot drift from `--help`.

    python scripts/gen_man.py           write man/evlog.1 and one man/evlog-<command>[-<sub>].1 per command
    python scripts/gen_man.py --check   write nothing; exit 1 listing drifted, missing and extra pages

The pages are built from the click command tree typer makes of `evlog.cli.app.app`
(help texts, options, arguments, subcommands), so a command added later gets a
page without touching this script. `Example:` lines of a command's help become
its EXAMPLES section. Hand-written prose sections for a page live in
`man/extra/<page-name>.roff` (e.g. `man/extra/evlog.roff`) and are inserted
before EXAMPLES and SEE ALSO. The output is deterministic: the .TH line carries
`evlog.__version__`, never a date.
"""

from __future__ import annotations

import argparse
import enum
import inspect
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
MAN_DIR = ROOT / "man"
EXTRA_DIR = MAN_DIR / "extra"
SECTION = "1"

# What each exit code means (SPEC 5), by `evlog.errors.ExitCode` member. A code added to the
# enum without a line here makes generation fail, so the table cannot silently fall behind.
EXIT_CODES = {
    "OK": "Success.",
    "ERROR": "Runtime error: missing log, I/O error, unusable settings, server failed.",
    "USAGE": "Usage error: unknown flag, bad value, bad filter expression; the message points at the problem.",
    "PARTIAL": "Finished, but some items were not handled: events dead-lettered, invalid input lines skipped.",
    "INVALID_INPUT": "Invalid input rejected; nothing was written.",
    "CORRUPT": "Corruption detected (by verify, or by a read that reaches a bad record).",
    "BUSY": "Busy: another process holds a lock this command will not wait for.",
    "SIGINT": "Stopped by SIGINT (Ctrl-C), after a clean shutdown.",
    "SIGTERM": "Stopped by SIGTERM, after a clean shutdown.",
}

# Environment variables that no option declares (or that need more than "default for --x").
ENVIRONMENT = {
    "EVLOG_DIR": "The log directory, when --dir is not given.",
    "EVLOG_LOG_FORMAT": "Format of evlog's own diagnostics on stderr, text or json, when --log-format is not given.",
    "EVLOG_SOURCE": "The source of appended events that do not name one; without it, evlog.",
    "XDG_DATA_HOME": "The default log directory is $XDG_DATA_HOME/evlog, or ~/.local/share/evlog when it is unset.",
}

# The directory layout (SPEC 3): path, then what it is.
FILES = [
    ("DIR/evlog.toml", "Settings, human-editable TOML."),
    ("DIR/segments/", "The records, in segments named by the offset of their first record (20 digits): "
                      "00000000000000000000.jsonl (.msgpack in a MessagePack log), then "
                      "00000000000000052113.jsonl and so on."),
    ("DIR/segments/*.index", "Sparse offset index of a segment; derived, rebuilt when missing or damaged."),
    ("DIR/segments/*.timeindex", "Time index of a segment; derived, rebuilt when missing or damaged."),
    ("DIR/groups/", "Consumer checkpoints, one file per group."),
    ("DIR/hooks.toml", "The hook registry."),
    ("DIR/dead-letter.jsonl", "The dead-letter file, JSON Lines."),
]
FILES_NOTE = "Other files (locks, temporary files) may exist; names beginning with . are private."


# -- the command tree --------------------------------------------------------------------------

@dataclass
class Node:
    """One command of the tree, with the click context it is rendered in."""

    path: tuple[str, ...]  # () for evlog itself, ("append",), ("dlq", "list") ...
    command: Any
    ctx: Any
    children: list[Node] = field(default_factory=list)

    @property
    def page(self) -> str:
        return "-".join(("evlog", *self.path))

    @property
    def is_group(self) -> bool:
        return hasattr(self.command, "commands")


def command_tree() -> Node:
    """The root of evlog's command tree, as typer builds it for click."""
    import typer  # noqa: TID251 - reading the CLI definition means reading typer's command tree

    from evlog.cli.app import app

    root = typer.main.get_command(app)
    return _node((), root, None)


def _node(path: tuple[str, ...], command: Any, parent_ctx: Any) -> Node:
    name = path[-1] if path else "evlog"
    ctx = command.context_class(command, info_name=name, parent=parent_ctx, **(command.context_settings or {}))
    node = Node(path, command, ctx)
    for sub_name, sub in getattr(command, "commands", {}).items():
        if not getattr(sub, "hidden", False):
            node.children.append(_node((*path, sub_name), sub, ctx))
    return node


def walk(node: Node) -> list[Node]:
    """The node and every command below it, depth first, in registration order."""
    out = [node]
    for child in node.children:
        out.extend(walk(child))
    return out


# -- help text ---------------------------------------------------------------------------------

def help_text(command: Any) -> str:
    return inspect.cleandoc(command.help or "").split("\f")[0].strip()


def split_help(text: str) -> tuple[list[str], list[str]]:
    """A help text's description paragraphs and its examples (`Example: CMD`, anywhere in a paragraph)."""
    paragraphs, examples = [], []
    for para in re.split(r"\n\s*\n", text):
        para = " ".join(para.split())
        if not para:
            continue
        head, sep, tail = para.partition("Example:")
        while sep:
            rest_head, sep2, rest_tail = tail.partition("Example:")
            examples.append(rest_head.strip())
            tail, sep = rest_tail, sep2
        if head.strip():
            paragraphs.append(head.strip())
    return paragraphs, [e for e in examples if e]


def summary(command: Any) -> str:
    """The one-line summary for NAME and command lists: the short help, else the first sentence."""
    if command.short_help:
        return " ".join(command.short_help.split()).rstrip(".")
    paragraphs, _ = split_help(help_text(command))
    return paragraphs[0].rstrip(".") if paragraphs else ""


# -- roff --------------------------------------------------------------------------------------

def esc(text: str) -> str:
    """Text for a roff body line: backslashes and hyphens escaped, no control character at the start."""
    text = text.replace("\\", "\\e").replace("-", "\\-")
    lines = [("\\&" + line if line.startswith((".", "'")) else line) for line in text.split("\n")]
    return "\n".join(lines)


def bold(text: str) -> str:
    return f"\\fB{esc(text)}\\fR"


def italic(text: str) -> str:
    return f"\\fI{esc(text)}\\fR"


def value_of(default: Any) -> str:
    if isinstance(default, enum.Enum):
        default = default.value
    if isinstance(default, list | tuple):
        return ", ".join(value_of(d) for d in default)
    return str(default)


def is_option(param: Any) -> bool:
    return getattr(param, "param_type_name", "") == "option"


def metavar(param: Any) -> str:
    """What follows an option's flag: its choices, its metavar, or its name in capitals."""
    choices = getattr(param.type, "choices", None)
    if choices:
        return "|".join(italic(value_of(c)) for c in choices)
    name = param.metavar or (param.name or "value").strip("_").upper()
    return italic(name)


def primary_flag(param: Any) -> str:
    """The long form of an option (`--lines` rather than `-n`), for the synopsis."""
    return next((o for o in param.opts if o.startswith("--")), param.opts[0])


def flags(param: Any) -> str:
    names = sorted(param.opts, key=lambda o: (o.startswith("--"), o)) + list(param.secondary_opts)
    out = ", ".join(bold(n) for n in names)
    if not param.is_flag and not getattr(param, "count", False):
        out += " " + metavar(param)
    return out


def option_help(param: Any) -> str:
    text = " ".join((getattr(param, "help", None) or "").split())
    extra = []
    rng = param.type
    low, high = getattr(rng, "min", None), getattr(rng, "max", None)
    if low is not None or high is not None:
        if high is None:
            extra.append(f"At least {low}.")
        elif low is None:
            extra.append(f"At most {high}.")
        else:
            extra.append(f"From {low} to {high}.")
    if param.multiple and "repeat" not in text.lower():
        extra.append("May be given more than once.")
    default = param.default
    if is_option(param) and param.is_flag and param.secondary_opts and isinstance(default, bool):
        extra.append(f"Default: {primary_flag(param) if default else param.secondary_opts[0]}.")
    if (is_option(param) and not param.is_flag and getattr(param, "show_default", None) is not False
            and default is not None and not callable(default) and "[default:" not in text):
        extra.append(f"Default: {value_of(default)}.")
    if param.required:
        extra.append("Required.")
    envvar = getattr(param, "envvar", None)
    if envvar:
        names = [envvar] if isinstance(envvar, str) else list(envvar)
        extra.append("Environment: " + ", ".join(names) + ".")
    return " ".join([text, *extra]).strip()


def params_of(node: Node) -> tuple[list[Any], list[Any]]:
    """The command's visible options (help included) and arguments, in declaration order."""
    params = [p for p in node.command.get_params(node.ctx) if not getattr(p, "hidden", False)]
    return [p for p in params if is_option(p)], [p for p in params if not is_option(p)]


def argument_label(param: Any) -> str:
    return param.metavar or (param.name or "arg").strip("_").upper() + ("..." if param.nargs == -1 else "")


def synopsis(node: Node) -> list[str]:
    lines = [".SH SYNOPSIS", ".B evlog"]
    if node.path:
        lines.append("[\\fIglobal options\\fR]")
        lines.extend(bold(p) for p in node.path)
    options, arguments = params_of(node)
    help_names = set(node.ctx.help_option_names)
    for opt in options:
        if set(opt.opts) & help_names:
            continue
        item = "|".join(bold(n) for n in [primary_flag(opt), *opt.secondary_opts])
        if not opt.is_flag and not getattr(opt, "count", False):
            item += " " + metavar(opt)
        lines.append(item if opt.required else f"[{item}]")
    if node.is_group:
        lines.append("\\fICOMMAND\\fR [\\fIARGS\\fR...]")
    for arg in arguments:
        label = argument_label(arg)
        if arg.required or label.startswith("["):
            lines.append(italic(label))
        else:
            lines.append(f"[{italic(label)}]")
    return lines


def page_header(node: Node, version: str) -> list[str]:
    title = node.page.upper()
    return [
        '.\\" Generated by scripts/gen_man.py from the evlog command line; do not edit.',
        '.\\" Regenerate with: python scripts/gen_man.py',
        f'.TH "{title}" "{SECTION}" "" "evlog {version}" "evlog manual"',
        ".nh",  # no hyphenation: flags and file names stay whole
        ".ad l",
        ".SH NAME",
        f"{esc(node.page)} \\- {esc(summary(node.command))}",
    ]


def description(paragraphs: list[str]) -> list[str]:
    if not paragraphs:
        return []
    lines = [".SH DESCRIPTION"]
    for i, para in enumerate(paragraphs):
        if i:
            lines.append(".PP")
        lines.append(esc(para))
    return lines


def examples_section(examples: list[str]) -> list[str]:
    if not examples:
        return []
    lines = [".SH EXAMPLES"]
    for i, example in enumerate(examples):
        if i:
            lines.append(".PP")
        lines += [".RS 4", ".nf", esc(example), ".fi", ".RE"]
    return lines


def options_section(title: str, options: list[Any], note: str = "") -> list[str]:
    if not options:
        return []
    lines = [f".SH {title}"] + ([note] if note else [])
    for opt in options:
        lines += [".TP", flags(opt)] + [esc(t) for t in [option_help(opt)] if t]
    return lines


def arguments_section(arguments: list[Any]) -> list[str]:
    if not arguments:
        return []
    lines = [".SH ARGUMENTS"]
    for arg in arguments:
        lines += [".TP", italic(argument_label(arg))] + [esc(t) for t in [option_help(arg)] if t]
    return lines


def commands_section(node: Node) -> list[str]:
    if not node.children:
        return []
    lines = [".SH COMMANDS"]
    for child in node.children:
        lines += [".TP", f"{bold(' '.join(child.path))}", f"{esc(summary(child.command))}. See {bold(child.page)}(1)."]
    return lines


def see_also(node: Node, tree: Node) -> list[str]:
    if node.path:
        refs = ["evlog"] + ["-".join(("evlog", *node.path[:i])) for i in range(1, len(node.path))]
        refs += [child.page for child in node.children]
    else:
        refs = [n.page for n in walk(tree)[1:]]
    return [".SH SEE ALSO", ",\n".join(f"{bold(ref)}({SECTION})" for ref in refs)]


def extra_prose(page: str, extra_dir: Path) -> list[str]:
    path = extra_dir / f"{page}.roff"
    if not path.is_file():
        return []
    text = path.read_text(encoding="utf-8").strip("\n")
    return [f'.\\" From man/extra/{path.name}', text] if text else []


def root_sections(tree: Node) -> list[str]:
    from evlog.errors import ExitCode

    lines = [".SH EXIT STATUS", "The same for every command:"]
    for code in ExitCode:
        if code.name not in EXIT_CODES:
            raise KeyError(f"ExitCode.{code.name} ({code.value}) has no description in scripts/gen_man.py EXIT_CODES")
        lines += [".TP", bold(str(code.value)), esc(EXIT_CODES[code.name])]
    lines += [".PP", esc("Errors go to stderr as one line, evlog: error: ..., without a traceback unless "
                         "--debug is given.")]

    lines += [".SH ENVIRONMENT"]
    envvars = dict(ENVIRONMENT)
    for node in walk(tree):
        for param in node.command.params:
            names = getattr(param, "envvar", None) or []
            for name in [names] if isinstance(names, str) else names:
                if name not in envvars:
                    where = " ".join(("evlog", *node.path))
                    what = primary_flag(param) if is_option(param) else argument_label(param)
                    envvars[name] = f"The default of {what} for {where}."
    for name in sorted(envvars):
        lines += [".TP", bold(name), esc(envvars[name])]

    lines += [".SH FILES",
              esc("A log is a directory, DIR: --dir, else $EVLOG_DIR, else $XDG_DATA_HOME/evlog. Its layout is "
                  "fixed, so that tools and scripts can find things:")]
    for path, what in FILES:
        lines += [".TP", bold(path), esc(what)]
    lines += [".PP", esc(FILES_NOTE)]
    return lines


def render(node: Node, tree: Node, version: str, extra_dir: Path = EXTRA_DIR) -> str:
    paragraphs, examples = split_help(help_text(node.command))
    options, arguments = params_of(node)
    lines = page_header(node, version) + synopsis(node) + description(paragraphs)
    if node.path:
        lines += options_section("OPTIONS", options, note=f"The global options of {bold('evlog')}(1), such as "
                                                          f"{bold('--dir')}, go before the command name.")
        lines += arguments_section(arguments) + commands_section(node)
    else:
        lines += options_section("GLOBAL OPTIONS", options) + commands_section(node) + root_sections(tree)
    lines += extra_prose(node.page, extra_dir) + examples_section(examples) + see_also(node, tree)
    return "\n".join(lines) + "\n"


def generate(extra_dir: Path = EXTRA_DIR) -> dict[str, str]:
    """Every man page, file name -> roff text, as the CLI defines them now."""
    from evlog import __version__

    tree = command_tree()
    pages = {f"{node.page}.{SECTION}": render(node, tree, __version__, extra_dir) for node in walk(tree)}
    return dict(sorted(pages.items()))


# -- writing and checking ----------------------------------------------------------------------

def _shown(path: Path) -> Path:
    return path.relative_to(ROOT) if path.is_relative_to(ROOT) else path


def compare(pages: dict[str, str], man_dir: Path = MAN_DIR) -> list[str]:
    """What differs between the generated pages and man_dir: one line per drifted, missing or extra file."""
    problems = []
    for name, text in pages.items():
        path = man_dir / name
        if not path.is_file():
            problems.append(f"missing: {_shown(path)}")
        elif path.read_text(encoding="utf-8") != text:
            problems.append(f"drifted: {_shown(path)}")
    if man_dir.is_dir():
        for path in sorted(man_dir.glob(f"*.{SECTION}")):
            if path.name not in pages:
                problems.append(f"extra: {_shown(path)}")
    extra_dir = man_dir / "extra"
    if extra_dir.is_dir():
        for path in sorted(extra_dir.glob("*.roff")):
            if f"{path.stem}.{SECTION}" not in pages:
                problems.append(f"orphan: {_shown(path)} "
                                f"(no page {path.stem}.{SECTION})")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if man/ is not up to date")
    args = parser.parse_args(argv)
    pages = generate()
    if args.check:
        problems = compare(pages)
        for line in problems:
            print(line)
        if problems:
            print("man pages are out of date: run `python scripts/gen_man.py`", file=sys.stderr)
            return 1
        return 0
    MAN_DIR.mkdir(exist_ok=True)
    for name, text in pages.items():
        path = MAN_DIR / name
        if not path.is_file() or path.read_text(encoding="utf-8") != text:
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(ROOT)}")
    for path in sorted(MAN_DIR.glob(f"*.{SECTION}")):
        if path.name not in pages:  # a command that no longer exists
            path.unlink()
            print(f"removed {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    sys.exit(main())
