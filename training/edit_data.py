"""Edit data from real commits: (instruction, file before, file after) triplets from git histories.

A commit gives a triplet when every filter below passes; the first that fails is counted as its reason, so the data
card says where the commits went. Cheap filters come first (the subject line, then the files `git log --raw` lists,
which reads no blob), so most commits are dropped before a file is read:

  merge commit               more than one parent
  revert                     the subject starts with "Revert"
  release or version bump    the subject names a release, a bump, or a version number as a version (VERSION_BUMP)
  not imperative             the subject, without a `type(scope):`/`scope:`/`[tag]` prefix, does not start with a verb
                             in the base form, or an adverb then one (VERBS, ADVERBS: closed lists, as a word's form
                             alone cannot tell "Fix" from "Fixes" or "Fixed"; "Don't ..." counts)
  not one file               the commit changes no file or several
  file added or deleted      no before or no after (or the file's type changed)
  language not validated     the file is not in LANGUAGES (Python, JS/TS, Go, Rust, Markdown)
  changelog                  the file is a changelog (CHANGELOG, CHANGES, HISTORY, NEWS, RELEASES...)
  blob missing               the mirror lacks the file's contents (a partial mirror)
  binary                     a NUL byte in the file
  not UTF-8
  file too long              either side longer than --max-lines
  too many changed lines     more than --max-changed-lines added plus removed lines (difflib's line diff)
  format only                before equals after once whitespace is removed
  duplicate                  the same before/after pair (whitespace-normalised) was kept already
  syntax issues              tree-sitter finds an ERROR or MISSING node in before or after (Python: compile() too,
                             which refuses what tree-sitter lets through, Python 2 code among it)
  benchmark function         before or after holds a function of EditEval or HumanEvalFix (see
                             `benchmark_functions`): the triplet is dropped so that training never sees a test item

A repository is read only under a recognised permissive licence (`detect_licence`): its LICENSE/COPYING files at HEAD.
Git is run as a subprocess (`git -C DIR`, bare mirrors and clones alike); blobs come through one `git cat-file --batch`.
"""

from __future__ import annotations

import contextlib
import difflib
import hashlib
import json
import os
import re
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath

from bench.items import DEFAULT_DATA, load_items
from editor.validation import detect_language, parser_for, syntax_issues

LANGUAGES = frozenset({"python", "javascript", "typescript", "tsx", "go", "rust", "markdown"})
MAX_CHANGED_LINES = 60
# A file of 300 lines is ~3,000 tokens; with the prompt's ~300 and a structured answer, an example fits a 4,096-token
# training sequence (a `whole` answer of it does not: the trainer caps by length, see docs/EDIT_DATA.md).
MAX_LINES = 300

VERBS = frozenset("""
accept adapt add address adjust align allow annotate appease apply assert attach avoid backport bind break bring
build cache call cap capture cast catch centralize change check clarify clean clean-up cleanup clear close collapse
combine comment compare compile complete compute condense configure connect consider consolidate construct consume
continue convert copy correct count cover create credit cut declare decode decrease deduplicate default defer define
delete demonstrate deny deprecate derive describe deserialize destructure detect disable disallow dispatch display
distinguish do document don't dont drain drop dump duplicate eliminate emit enable encode end enforce enhance ensure
escape evaluate exclude execute exit expand expect explain export expose extend extract factor fetch fill filter
finalize finish fix flatten fold force format forward free freeze gate generalize generate get give group grow guard
handle harmonize hide highlight hoist honor hook hyperlink ignore illustrate implement import improve include
incorporate increase indent infer inherit initialize inject inline insert inspect install instantiate integrate
introduce invert invoke isolate iterate join keep kill leave let lift limit link lint list load localize lock log
loosen lower make mark match mention migrate mock modernize modify mount move name nest normalize note notify offer
omit open optimize output override overwrite pad pair parallelize parameterize parametrize parse pass patch permit
pick pin pluralize point polish populate port prefer prepare prepend preserve prevent print proofread propagate
protect provide prune publish pull put qualify query quote raise re-add re-enable re-export read rearrange rebuild
recognize recommend record recover redirect redo reduce refactor refer reference refine reflow reformat refresh
regenerate register reimplement reject relax reload relocate rely remember remove rename render reorder reorganize
repair repeat rephrase replace report request require rerun rescue reserve reset resize resolve respect restore
restrict restructure resume retain retry return reuse revamp reverse review revise reword rework rewrap rewrite
round route run sanitize save scope search select send separate serialize set shadow share shift ship shorten show
shrink silence simplify skip sleep slice sort specialize specify speed spell split squash stabilize start stop store
streamline strengthen strip stub style subclass submit substitute suggest support suppress surface swallow swap
switch sync tag take teach tell test throw tidy tighten toggle touch track transform translate treat trigger trim
truncate try tune turn tweak uncomment undo unexport unhide unify unignore uninstall unpin unset unskip unwrap
upcase update upgrade uppercase use utilize validate vendor verify wait walk warn watch whitelist widen wire word
wrap write yield
""".split())
# An adverb may come before the verb ("Only iterate ...", "Always include ...").
ADVERBS = frozenset("also always correctly consistently explicitly first further never now only properly "
                    "temporarily".split())
# "[tag] ", "scope: ", "fix(scope)!: ", "Ch. 21: ", a leading emoji
PREFIX = re.compile(r"^(\[[^\]]*\]\s*|[\w./*#~-]+( [\w./*#~-]+){0,2}(\([^)]*\))?!?:\s+|[^\w\s\[(`'\"]+\s*)")
PR_REFERENCE = re.compile(r"\s*\(\s*#\d+(\s*,\s*#\d+)*\s*\)\s*$|\s+#\d+\s*$")  # "(#123)", "(#1, #2)", " #123"
VERSION_BUMP = re.compile(r"^v?\d+(\.\d+)+\b|\b(bump|bumped|bumps|release|released|releasing)\b"
                          r"|\bversion\b.*\d+\.\d+|\d+\.\d+.*\bversion\b|\bv\d+\.\d+", re.I)
CHANGELOG = re.compile(r"^(changelog|changes|history|news|releases?)([._-].*)?$", re.I)

# License file text -> SPDX id; the first pattern found names the file's licence.
LICENCES = (
    ("Apache-2.0", re.compile(r"Apache License.{0,40}Version 2\.0", re.S)),
    ("MIT", re.compile(r"Permission is hereby granted, free of charge")),
    ("BSD-3-Clause", re.compile(r"Redistribution and use in source and binary forms.*Neither the name", re.S)),
    ("BSD-2-Clause", re.compile(r"Redistribution and use in source and binary forms")),
    ("ISC", re.compile(r"Permission to use, copy, modify, and(/or)? distribute this software for any")),
    ("Unlicense", re.compile(r"This is free and unencumbered software released into the public domain")),
    ("MPL-2.0", re.compile(r"Mozilla Public License,? (Version|v\.?) ?2\.0")),
    ("0BSD", re.compile(r"Permission to use, copy, modify, and/or distribute this software for any purpose with or "
                        r"without fee is hereby granted\.\s+THE SOFTWARE")),
)
LICENCE_FILE = re.compile(r"^(licen[cs]e|copying|unlicense)([._-].*)?$", re.I)
# What a function is in each language's tree-sitter grammar.
FUNCTION_TYPES = frozenset({"function_definition", "function_declaration", "method_definition",
                            "method_declaration", "function_item", "function_expression", "arrow_function",
                            "generator_function_declaration"})

Progress = Callable[[str, int, int, dict], None]  # (phase, done, total, info)


class EditDataError(ValueError):
    """A repository that cannot be used (no git history, no permissive licence) or missing benchmark data."""


@dataclass(frozen=True)
class Triplet:
    repo: str
    commit: str
    path: str
    language: str
    licence: str
    instruction: str
    before: str
    after: str

    def to_json(self) -> dict:
        return asdict(self)


@dataclass
class RepoStats:
    name: str
    path: str
    licence: str
    head: str
    commits_scanned: int = 0
    triplets: int = 0
    filtered: Counter = field(default_factory=Counter)
    per_language: Counter = field(default_factory=Counter)

    def to_json(self) -> dict:
        return {"name": self.name, "path": self.path, "licence": self.licence, "head": self.head,
                "commits_scanned": self.commits_scanned, "triplets": self.triplets,
                "filtered": dict(self.filtered.most_common()), "per_language": dict(sorted(self.per_language.items()))}


# ---------------------------------------------------------------------------------------------
# Subject lines


def instruction_of(subject: str) -> str | None:
    """The instruction a commit's subject line gives (PR references and `type(scope):` prefixes stripped, the first
    letter capitalised), or None when it does not start with a verb in the base form. The most stripped form that
    starts with a verb wins ("fix(ssr): normalize ..." -> "Normalize ..."; "Fix: ..." keeps its "Fix")."""
    forms = [PR_REFERENCE.sub("", subject.strip())]
    while (prefix := PREFIX.match(forms[-1])) is not None and len(forms[-1]) > prefix.end():
        forms.append(forms[-1][prefix.end():])
    for text in reversed(forms):
        text = text.strip().rstrip(".").strip()
        words = [word.lower().strip(",:") for word in text.split()[:2]]
        if words and words[0] in ADVERBS:
            words = words[1:]
        if words and words[0] in VERBS:
            return text[0].upper() + text[1:]
    return None


def subject_reason(subject: str) -> str | None:
    """Why a subject line alone rules its commit out, or None."""
    if subject.lower().startswith("revert"):
        return "revert"
    if VERSION_BUMP.search(subject):
        return "release or version bump"
    if instruction_of(subject) is None:
        return "not imperative"
    return None


# ---------------------------------------------------------------------------------------------
# Repositories


def git(repo: Path, *args: str) -> str:
    """stdout of `git -C repo args...`; EditDataError naming the repository when git fails."""
    done = subprocess.run(["git", "-C", str(repo), "-c", "core.quotePath=off", *args], capture_output=True)
    if done.returncode != 0:
        raise EditDataError(f"{repo}: git {' '.join(args[:2])} failed: "
                            f"{done.stderr.decode('utf-8', 'replace').strip() or done.returncode}")
    return done.stdout.decode("utf-8", "replace")


def repo_name(repo: Path) -> str:
    """owner/name for a mirror folder `owner+name/repo`, else the folder's name without `.git`."""
    folder = Path(os.path.abspath(repo))
    if folder.name == "repo" and "+" in folder.parent.name:
        return folder.parent.name.replace("+", "/", 1)
    return folder.name.removesuffix(".git")


def detect_licence(repo: Path) -> str:
    """The repository's permissive licence(s) at HEAD as SPDX ids ("MIT OR Apache-2.0" for several files), from its
    top-level LICENSE*/LICENCE*/COPYING*/UNLICENSE* files. EditDataError when none is recognised."""
    names = [name for name in git(repo, "ls-tree", "--name-only", "HEAD").splitlines() if LICENCE_FILE.match(name)]
    found = []
    for name in names:
        text = git(repo, "show", f"HEAD:{name}")
        licence = next((spdx for spdx, pattern in LICENCES if pattern.search(text)), None)
        if licence is not None and licence not in found:
            found.append(licence)
    if not found:
        looked = ", ".join(names) if names else "no LICENSE or COPYING file at HEAD"
        raise EditDataError(f"{repo}: no recognised permissive licence ({looked}); known: "
                            f"{', '.join(spdx for spdx, _ in LICENCES)}. Refusing to take data from it")
    return " OR ".join(found)


@dataclass(frozen=True)
class FileChange:
    """One file a commit changes, as `git log --raw` lists it."""

    status: str  # M modified, A added, D deleted, T type changed
    old_blob: str
    new_blob: str
    path: str


@dataclass(frozen=True)
class Commit:
    sha: str
    parents: tuple[str, ...]
    subject: str
    files: tuple[FileChange, ...]  # against the first parent; none listed for a merge


def commits(repo: Path) -> list[Commit]:
    """Every commit reachable from HEAD, the branches or the tags (the project's own history; a mirror's pull-request
    refs are left out), newest first, with the files it changes (renames as delete + add)."""
    log = git(repo, "log", "--format=%x1e%H%x1f%P%x1f%s", "--raw", "--no-abbrev", "--no-renames", "HEAD", "--branches",
              "--tags")
    found = []
    for record in log.split("\x1e")[1:]:
        header, _, raw = record.partition("\n")
        sha, parents, subject = header.split("\x1f", 2)
        files = []
        for line in raw.splitlines():
            if line.startswith(":") and "\t" in line:
                fields, path = line.split("\t", 1)
                _, _, old_blob, new_blob, status = fields.split(" ", 4)
                files.append(FileChange(status[:1], old_blob, new_blob, path))
        found.append(Commit(sha, tuple(parents.split()), subject, tuple(files)))
    return found


class BlobReader:
    """`git cat-file --batch` over one repository: `read(blob id)` -> bytes, or None when missing."""

    def __init__(self, repo: Path):
        self.process = subprocess.Popen(["git", "-C", str(repo), "cat-file", "--batch"], stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE)

    def read(self, spec: str) -> bytes | None:
        self.process.stdin.write(spec.encode("utf-8") + b"\n")
        self.process.stdin.flush()
        header = self.process.stdout.readline().split()
        if len(header) != 3 or header[1] != b"blob":
            return None
        data = self.process.stdout.read(int(header[2]))
        self.process.stdout.read(1)  # the newline after the contents
        return data

    def close(self) -> None:
        self.process.stdin.close()
        self.process.wait()


# ---------------------------------------------------------------------------------------------
# Decontamination


def _squeezed(text: str) -> str:
    return "".join(text.split())


def benchmark_functions(folder: Path | None = None) -> frozenset[str]:
    """The functions of EditEval and HumanEvalFix (the code before and after each item), found by tree-sitter and
    whitespace removed: names, signatures and bodies. A triplet whose before or after, whitespace removed, contains
    one of them holds that function (as a function of the file, or quoted in a Markdown code block)."""
    functions = set()
    for benchmark in ("editeval", "humanevalfix"):
        try:
            items = load_items(benchmark, folder=folder)
        except FileNotFoundError as error:
            raise EditDataError(f"cannot decontaminate: {error}") from None
        for item in items:
            for code in (item.code, item.reference or ""):
                functions.update(_squeezed(text) for text in function_texts(code, "python"))
    return frozenset(functions)


def function_texts(text: str, language: str) -> Iterator[str]:
    """The text of every function in `text` (nested ones too), by tree-sitter."""
    source = text.encode("utf-8")
    stack = [parser_for(language).parse(source).root_node]
    while stack:
        node = stack.pop()
        if node.type in FUNCTION_TYPES:
            yield source[node.start_byte:node.end_byte].decode("utf-8", "replace")
        stack.extend(node.children)


def shares_function(text: str, functions: frozenset[str]) -> bool:
    squeezed = _squeezed(text)
    return any(function in squeezed for function in functions)


# ---------------------------------------------------------------------------------------------
# Triplets


def files_reason(commit: Commit) -> str | None:
    """Why the files the commit changes rule it out before any is read, or None."""
    if len(commit.files) != 1:
        return "not one file"
    change = commit.files[0]
    if change.status != "M":
        return "file added or deleted"
    if detect_language(change.path) not in LANGUAGES:
        return "language not validated"
    if CHANGELOG.match(PurePosixPath(change.path).name):
        return "changelog"
    return None


def changed_lines(before: str, after: str) -> int:
    """Lines added plus lines removed, by difflib's line diff."""
    matcher = difflib.SequenceMatcher(None, before.splitlines(), after.splitlines(), autojunk=False)
    return sum(i2 - i1 + j2 - j1 for tag, i1, i2, j1, j2 in matcher.get_opcodes() if tag != "equal")


def parses(path: str, text: str, language: str) -> bool:
    """No ERROR or MISSING node; Python code also compiles."""
    if syntax_issues(path, text, language)[1]:
        return False
    if language == "python":
        try:
            compile(text, path, "exec", dont_inherit=True)
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            return False
    return True


def _pair_key(before: str, after: str) -> str:
    normalised = " ".join(before.split()) + "\0" + " ".join(after.split())
    return hashlib.sha1(normalised.encode("utf-8")).hexdigest()


def _lines(text: str) -> int:
    return text.count("\n") + (0 if text.endswith("\n") or not text else 1)


def repo_triplets(repo: Path, stats: RepoStats, functions: frozenset[str], seen: set[str], *,
                  max_lines: int = MAX_LINES, max_changed_lines: int = MAX_CHANGED_LINES, limit: int | None = None,
                  on_progress: Progress | None = None) -> Iterator[Triplet]:
    """The triplets of one repository's history, newest first; `stats` counts commits, triplets and each filter
    reason; `seen` holds the kept pairs' keys across repositories (deduplication)."""
    history = commits(repo)
    reader = BlobReader(repo)
    try:
        for number, commit in enumerate(history, 1):
            stats.commits_scanned += 1
            if on_progress is not None and (number % 50 == 0 or number == len(history)):
                on_progress(stats.name, number, len(history), {"kept": stats.triplets})
            reason, triplet = _triplet(commit, stats, reader, functions, seen, max_lines, max_changed_lines)
            if reason is not None:
                stats.filtered[reason] += 1
                continue
            stats.triplets += 1
            stats.per_language[triplet.language] += 1
            yield triplet
            if limit is not None and stats.triplets >= limit:
                break
    finally:
        reader.close()
    if on_progress is not None:
        on_progress(stats.name, len(history), len(history), {"kept": stats.triplets})


def _triplet(commit: Commit, stats: RepoStats, reader: BlobReader, functions: frozenset[str], seen: set[str],
             max_lines: int, max_changed_lines: int) -> tuple[str | None, Triplet | None]:
    """(None, the triplet) or (the first filter reason, None)."""
    if len(commit.parents) > 1:
        return "merge commit", None
    reason = subject_reason(commit.subject) or files_reason(commit)
    if reason is not None:
        return reason, None
    change = commit.files[0]
    old, new = reader.read(change.old_blob), reader.read(change.new_blob)
    if old is None or new is None:
        return "blob missing", None
    if b"\0" in old or b"\0" in new:
        return "binary", None
    try:
        before, after = old.decode("utf-8"), new.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8", None
    if max(_lines(before), _lines(after)) > max_lines:
        return "file too long", None
    if changed_lines(before, after) > max_changed_lines:
        return "too many changed lines", None
    if _squeezed(before) == _squeezed(after):
        return "format only", None
    key = _pair_key(before, after)
    if key in seen:
        return "duplicate", None
    seen.add(key)
    language = detect_language(change.path, after)
    if not parses(change.path, before, language) or not parses(change.path, after, language):
        return "syntax issues", None
    if shares_function(before, functions) or shares_function(after, functions):
        return "benchmark function", None
    return None, Triplet(stats.name, commit.sha, change.path, language, stats.licence, instruction_of(commit.subject),
                         before, after)


def open_repositories(repos: list[Path]) -> list[RepoStats]:
    """Stats for each repository, its licence and HEAD checked first: EditDataError before any is read."""
    opened = []
    for repo in repos:
        if not Path(repo).is_dir():
            raise EditDataError(f"{repo}: not a folder")
        head = git(repo, "rev-parse", "HEAD").strip()
        opened.append(RepoStats(repo_name(repo), str(repo), detect_licence(repo), head))
    names = [stats.name for stats in opened]
    if len(set(names)) != len(names):
        twice = sorted(name for name in set(names) if names.count(name) > 1)
        raise EditDataError(f"two repositories share a name: {', '.join(twice)}")
    return opened


def build(repos: list[Path], out: Path, *, examples: Path | None = None, max_lines: int = MAX_LINES,
          max_changed_lines: int = MAX_CHANGED_LINES, limit_per_repo: int | None = None,
          benchmarks: Path | None = None, check_grammar: bool = True, command: str = "",
          on_progress: Progress | None = None) -> dict:
    """Write the triplets of `repos` to `out` (JSONL) and, with `examples`, their rendered examples (JSONL, one per
    format that says the change; see training.edit_render). Each file is written whole or not at all (a temporary
    file, then a rename). Returns the data card."""
    from .edit_render import examples_for

    started = time.perf_counter()
    opened = open_repositories(repos)
    functions = benchmark_functions(benchmarks)
    seen: set[str] = set()
    outcomes: Counter = Counter()
    per_format: Counter = Counter()
    finals = [out] + ([examples] if examples else [])
    partial = [final.with_name(final.name + ".part") for final in finals]
    try:
        with contextlib.ExitStack() as stack:
            triplet_file, *example_file = [stack.enter_context(open(part, "w", encoding="utf-8")) for part in partial]
            for repo, stats in zip(repos, opened):
                for triplet in repo_triplets(repo, stats, functions, seen, max_lines=max_lines,
                                             max_changed_lines=max_changed_lines, limit=limit_per_repo,
                                             on_progress=on_progress):
                    triplet_file.write(json.dumps(triplet.to_json(), ensure_ascii=False) + "\n")
                    for example in examples_for(triplet, outcomes, check_grammar=check_grammar) if examples else []:
                        per_format[example.format] += 1
                        example_file[0].write(json.dumps(example.to_json(), ensure_ascii=False) + "\n")
        for part, final in zip(partial, finals):
            os.replace(part, final)
    finally:
        for part in partial:
            part.unlink(missing_ok=True)
    return _card(opened, functions, max_lines, max_changed_lines, limit_per_repo, command,
                 time.perf_counter() - started, per_format if examples else None, outcomes)


def _card(opened: list[RepoStats], functions: frozenset[str], max_lines: int, max_changed_lines: int,
          limit_per_repo: int | None, command: str, seconds: float, per_format: Counter | None,
          outcomes: Counter) -> dict:
    filtered, per_language = Counter(), Counter()
    for stats in opened:
        filtered.update(stats.filtered)
        per_language.update(stats.per_language)
    card = {
        "command": command,
        "settings": {"max_lines": max_lines, "max_changed_lines": max_changed_lines, "limit_per_repo": limit_per_repo,
                     "languages": sorted(LANGUAGES)},
        "repositories": [stats.to_json() for stats in opened],
        "totals": {"commits_scanned": sum(stats.commits_scanned for stats in opened),
                   "triplets": sum(stats.triplets for stats in opened),
                   "filtered": dict(filtered.most_common()), "per_language": dict(sorted(per_language.items()))},
        "decontamination": {"benchmarks": ["EditEval", "HumanEvalFix (Python)"],
                            "benchmark_functions": len(functions), "dropped": filtered["benchmark function"]},
        "seconds": round(seconds, 1),
    }
    if per_format is not None:
        card["examples"] = {"per_format": dict(sorted(per_format.items())), "total": sum(per_format.values()),
                            "outcomes": dict(sorted(outcomes.items()))}
    return card


def card_markdown(card: dict) -> str:
    """The data card as Markdown (docs/EDIT_DATA.md)."""
    totals, settings = card["totals"], card["settings"]
    languages = sorted(LANGUAGES)
    limit = f", at most {settings['limit_per_repo']} triplets per repository" if settings["limit_per_repo"] else ""
    lines = ["# Edit data: triplets from real commits", "",
             "Made by (the outputs lie outside the repository; the data is not committed):", "",
             "```", card["command"], "```", "",
             f"Settings: files of at most {settings['max_lines']} lines, at most {settings['max_changed_lines']} "
             f"changed lines, languages {', '.join(settings['languages'])}{limit}. "
             f"Took {card['seconds'] / 60:.1f} min. "
             "The filters are described in training/edit_data.py, the rendering in training/edit_render.py.", "",
             f"**{totals['triplets']} triplets** from {totals['commits_scanned']} commits of "
             f"{len(card['repositories'])} repositories.", "",
             "| repository | licence | HEAD | commits scanned | triplets | " + " | ".join(languages) + " |",
             "|---|---|---|---:|---:|" + "---:|" * len(languages)]
    for repo in card["repositories"]:
        counts = " | ".join(str(repo["per_language"].get(language, 0)) for language in languages)
        lines.append(f"| {repo['name']} | {repo['licence']} | {repo['head'][:12]} | {repo['commits_scanned']} | "
                     f"{repo['triplets']} | {counts} |")
    counts = " | ".join(str(totals["per_language"].get(language, 0)) for language in languages)
    lines += [f"| **total** | | | {totals['commits_scanned']} | {totals['triplets']} | {counts} |", "",
              "## Filtered commits (the first reason each failed)", "", "| reason | commits |", "|---|---:|"]
    lines += [f"| {reason} | {count} |" for reason, count in totals["filtered"].items()]
    reasons = list(totals["filtered"])
    lines += ["", "Per repository:", "", "| repository | " + " | ".join(reasons) + " |",
              "|---|" + "---:|" * len(reasons)]
    for repo in card["repositories"]:
        lines.append(f"| {repo['name']} | " + " | ".join(str(repo["filtered"].get(r, 0)) for r in reasons) + " |")
    decontamination = card["decontamination"]
    lines += ["", "## Decontamination", "",
              f"{decontamination['benchmark_functions']} distinct functions of "
              f"{' and '.join(decontamination['benchmarks'])} (tree-sitter, whitespace removed); "
              f"{decontamination['dropped']} triplets held one and were dropped. "
              "CanItEdit, EditPackFT, CommitPackFT and InstructCoder data are not used."]
    if "examples" in card:
        examples = card["examples"]
        lines += ["", "## Rendered examples", "",
                  f"{examples['total']} examples, each checked to apply back to `after` exactly and to be admitted by "
                  "the format's grammar narrowed to the file.", "", "| format | examples |", "|---|---:|"]
        lines += [f"| {fmt} | {count} |" for fmt, count in examples["per_format"].items()]
        lines += ["", "| format: outcome | triplets |", "|---|---:|"]
        lines += [f"| {outcome} | {count} |" for outcome, count in examples["outcomes"].items()]
    return "\n".join(lines) + "\n"
