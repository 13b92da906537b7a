"""Prompts: one template per format in prompts/, turned into chat messages.

A template is a system text, then `### example` (a user turn), `### answer` (the assistant's reply to
it) and `### user` (the real request). The file is shown the way its format needs it: plain lines for
patches, rules and OT edits (which quote the file's text), numbered lines for unified diffs (hunk headers
need line numbers).
"""

from __future__ import annotations

import re

import prompts

SECTION = re.compile(r"^### (example|answer|user)\n", re.M)
# An excerpt of a long file (editor/focus.py) is shown as a file and rewritten as one: the 0.5B model, told
# that it saw part of a file, mostly changed nothing (docs/FORMATS.md, Excerpt edits).
TEMPLATES = {"excerpt": "whole"}


def show_numbered(text: str) -> str:
    return "\n".join(f"{i}: {line}" for i, line in enumerate(text.split("\n"), 1))


def fill(template: str, values: dict[str, str]) -> str:
    # str.replace, not str.format: code is full of braces.
    for key, value in values.items():
        template = template.replace("{" + key + "}", value)
    return template


def messages(format: str, *, path: str, text: str, instruction: str, language: str | None,
             feedback: list[tuple[str, str]] = ()) -> list[dict[str, str]]:
    """Chat messages for one request; `feedback` holds (rejected output, error) pairs of earlier tries."""
    template = prompts.load(TEMPLATES.get(format, format))
    parts = SECTION.split(template)
    system, sections = parts[0].strip(), dict(zip(parts[1::2], parts[2::2]))
    shown = text[:-1] if text.endswith("\n") else text
    values = {"path": path, "instruction": instruction.strip(), "language": language or "text",
              "file": shown, "numbered_file": show_numbered(shown)}
    chat = [{"role": "system", "content": system},
            {"role": "user", "content": sections["example"].strip()},
            {"role": "assistant", "content": sections["answer"].strip()},
            {"role": "user", "content": fill(sections["user"], values).strip()}]
    for output, error in feedback:
        chat.append({"role": "assistant", "content": output})
        chat.append({"role": "user", "content": f"That edit was rejected: {error}\n"
                                                f"Write a corrected edit for the same instruction."})
    return chat
