"""Real CardDAV clients driven from the tests: vdirsyncer and khard, as their own processes.

Both come from PyPI in the dev dependency group, so ``uv sync`` puts them beside the test's
Python (``.venv/bin``); :func:`executable` finds them there (or on ``PATH``). Each run gets a
config written to the test's ``tmp_path``, a ``HOME`` of its own (so no config of the person
running the suite is read) and a timeout, and its output is kept for the assertion message.
Both tools ask questions on a terminal; the answers are given on standard input, never left
to a terminal that is not there (khard asks again forever on an empty standard input).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import vobject

TIMEOUT = 120


def executable(name: str) -> str | None:
    """The path of the console script ``name``: beside this Python first, then on ``PATH``."""
    beside = Path(sys.executable).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


@dataclass
class Run:
    """A finished run of a client: its exit code and what it printed."""

    args: list[str]
    returncode: int
    stdout: str
    stderr: str

    def check(self) -> Run:
        """This run, or an AssertionError with everything it printed when it failed."""
        assert self.returncode == 0, self.describe()
        return self

    def describe(self) -> str:
        """The command line, exit code and output, for an assertion message."""
        return (
            f"{' '.join(self.args)} -> exit {self.returncode}\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


async def run(args: list[str], *, home: Path, stdin: str = "", timeout: float = TIMEOUT) -> Run:
    """Run ``args`` with ``home`` as ``HOME`` and ``stdin`` as input; the event loop stays free.

    The service under test may run on this test's loop's thread pool or in its own thread:
    the client's blocking wait goes to a worker thread so neither is held up.
    """
    env = {
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "HOME": str(home),
        "XDG_CONFIG_HOME": str(home / ".config"),
        "XDG_DATA_HOME": str(home / ".local" / "share"),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "EDITOR": "/bin/false",
        "VISUAL": "/bin/false",
        # Only the loopback is ever reached; a proxy from the environment must not be used.
        "NO_PROXY": "*",
    }
    done = await asyncio.to_thread(
        subprocess.run,
        args,
        input=stdin,
        capture_output=True,
        text=True,
        env=env,
        timeout=timeout,
        check=False,
    )
    return Run(args=args, returncode=done.returncode, stdout=done.stdout, stderr=done.stderr)


# --------------------------------------------------------------------------- vdirsyncer


class Vdirsyncer:
    """One vdirsyncer pair ``book``: a local vdir (``a``) and a CardDAV address book (``b``)."""

    def __init__(
        self,
        binary: str,
        root: Path,
        *,
        url: str,
        username: str,
        password: str,
        conflict: str = "a wins",
        collections: str = '["from b"]',
    ) -> None:
        self.binary = binary
        self.root = root
        self.home = root / "home"
        self.vdir = root / "vdir"
        self.status = root / "status"
        self.config = root / "vdirsyncer.conf"
        for folder in (self.vdir, self.status, self.home):
            folder.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            "[general]\n"
            f'status_path = "{self.status}/"\n\n'
            "[pair book]\n"
            'a = "local"\n'
            'b = "remote"\n'
            f"collections = {collections}\n"
            f'conflict_resolution = "{conflict}"\n\n'
            "[storage local]\n"
            'type = "filesystem"\n'
            f'path = "{self.vdir}/"\n'
            'fileext = ".vcf"\n\n'
            "[storage remote]\n"
            'type = "carddav"\n'
            f'url = "{url}"\n'
            f'username = "{username}"\n'
            f'password = "{password}"\n',
            encoding="utf-8",
        )

    async def run(self, *args: str, stdin: str = "") -> Run:
        """Run ``vdirsyncer ARGS`` with this config, whatever its outcome."""
        return await run([self.binary, "--config", str(self.config), *args], home=self.home, stdin=stdin)

    async def discover(self) -> Run:
        """Find the server's address books; answer yes to creating the local collection."""
        return (await self.run("discover", "book", stdin="y\n" * 8)).check()

    async def sync(self) -> Run:
        """One sync of the pair, which must succeed."""
        return (await self.run("sync")).check()

    def collection(self) -> Path:
        """The local folder of the one synced address book."""
        folders = [p for p in self.vdir.iterdir() if p.is_dir()]
        assert len(folders) == 1, f"expected one synced collection, found {folders}"
        return folders[0]


# --------------------------------------------------------------------------- khard


class Khard:
    """khard reading (and writing) the vdir that vdirsyncer keeps."""

    def __init__(self, binary: str, root: Path, collection: Path) -> None:
        self.binary = binary
        self.home = root / "khard-home"
        self.home.mkdir(parents=True, exist_ok=True)
        self.config = root / "khard.conf"
        self.config.write_text(
            f"[addressbooks]\n[[book]]\npath = {collection}/\n\n"
            "[general]\neditor = /bin/false\nmerge_editor = /bin/false\n\n"
            "[vcard]\npreferred_version = 3.0\nskip_unparsable = no\n",
            encoding="utf-8",
        )

    async def __call__(self, *args: str, stdin: str = "") -> Run:
        """Run ``khard ARGS`` with this config."""
        return await run([self.binary, "-c", str(self.config), *args], home=self.home, stdin=stdin)

    async def uids(self, *terms: str) -> dict[str, str]:
        """``{uid: name}`` of the contacts ``khard list`` finds for ``terms`` (all without terms)."""
        done = await self("list", "--parsable", *terms)
        if done.returncode != 0:
            # khard exits 1, saying nothing with --parsable, when nothing matches.
            assert done.returncode == 1, done.describe()
            assert not done.stdout.strip(), done.describe()
            return {}
        rows = [line.split("\t") for line in done.stdout.splitlines() if line.strip()]
        return {row[0]: row[1] for row in rows}

    async def edit(self, uid: str, yaml_path: Path) -> Run:
        """Replace the contact with UID ``uid`` by the YAML in ``yaml_path``, confirming the change."""
        return (await self("edit", "--input-file", str(yaml_path), f"uid:{uid}", stdin="yes\n")).check()


# --------------------------------------------------------------------------- vCards


def parse(text: str) -> vobject.base.Component:
    """The one vCard in ``text``."""
    cards = list(vobject.readComponents(text))
    assert len(cards) == 1, f"expected one vCard, got {len(cards)}:\n{text}"
    return cards[0]


def local_cards(folder: Path) -> dict[str, vobject.base.Component]:
    """``{file name: card}`` of the ``.vcf`` files in a vdir collection."""
    return {path.name: parse(path.read_text(encoding="utf-8")) for path in sorted(folder.glob("*.vcf"))}


def emails_of(card: vobject.base.Component) -> list[str]:
    """The card's EMAIL values, lower-cased."""
    return [line.value.strip().lower() for line in card.contents.get("email", [])]


def card_with_email(folder: Path, email: str) -> tuple[Path, vobject.base.Component] | None:
    """The file and card in ``folder`` that has ``email``, or ``None``."""
    found = [(folder / name, card) for name, card in local_cards(folder).items() if email in emails_of(card)]
    assert len(found) <= 1, f"{email} is on {len(found)} local cards"
    return found[0] if found else None


def write_atomically(path: Path, text: str) -> None:
    """Write ``path`` as an editor would: a new file renamed over the old (a new inode and mtime)."""
    temporary = path.with_name(f".{path.name}.tmp")
    temporary.write_text(text, encoding="utf-8", newline="")
    os.replace(temporary, path)


def given_name(card: vobject.base.Component) -> str:
    """The given name of the card's N."""
    return str(card.n.value.given)


def family_name(card: vobject.base.Component) -> str:
    """The family name of the card's N."""
    return str(card.n.value.family)
