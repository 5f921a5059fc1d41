"""CASIA-SURF CeFA (Liu et al., WACV 2021): cross-ethnicity face anti-spoofing videos, RGB/depth/IR.

Layout, as released (``data.root``)::

    AF/AF-000/1_000_1_1_1/profile/0001.jpg      <race>/<subject>/<video>/<modality>/<frame>
                          depth/0001.jpg
                          ir/0001.jpg
    CA/...
    EA/...

A video folder is named ``race_subject_device_session_pai`` (five integers):
subject 000-499; device 1 rssdk, 2 mp4, 3 bag, 4 MOV; session 1 indoor, 2 outdoor, 3 random;
PAI (presentation attack instrument) 1 real face, 2 cloth (print), 3 photo, 4 screen (replay).
The race is the top folder: AF (African), CA (Central Asian), EA (East Asian). Subject folders
are named differently between copies (``AF-000``, ``AF-000-<id card>``), so every folder two
levels below a race folder whose name has that five-integer form counts as a video. "profile"
is the RGB modality ("rgb" here); the three images of a frame share its file name.

Protocols: the release has no list files; the dataset authors' protocol code (the one MMANet's
authors use, ``race_prot_rdi_<p>@<k>``) selects the videos of each split by their name fields.
Every split uses devices 1 and 3 and sessions 1 and 2; train is subjects 0-199, val ("dev")
200-299, test 300-499. ``data.cefa.protocol`` names one of (k = 1..6 runs over the ordered race
pairs (seen, unseen) AF-CA, AF-EA, CA-AF, CA-EA, EA-AF, EA-CA):

* ``1@k`` cross-ethnicity: train / val on the seen race, test on the unseen; PAI 1, 2, 4.
* ``2@1``, ``2@2`` cross-PAI: all races; train / val on real + cloth (2@1) or real + screen
  (2@2), test on real + the other instrument.
* ``4@k`` cross-ethnicity and cross-PAI: train / val on the seen race, real + screen; test on
  the unseen race, real + cloth. (The WACV paper's protocol 4.1 / 4.3 / 4.5 tests on both
  unseen races; 4@1 + 4@2 here together are its 4.1.) The paper's CeFA results use 4@5.

Labels: the PAI field decides, mapped explicitly by ``PAI_TO_CLASS`` to the classes of every
face dataset (:mod:`mmanet.data.face`: 1 = bona fide, 0 = attack; ``class_names ==
["attack", "bona fide"]``). The dataset's own code labels real faces 0 and attacks 1; we do
not. Each attack sample also keeps its instrument as its attack type (``PAI_NAMES``: cloth,
photo, screen; ``FaceRecord.attack_type``, the dataset's ``attack_types``), for the worst
attack type's APCER in evaluation.

Every frame of a video is a sample (``data.cefa.frames_per_video`` takes that many, evenly
strided from the first). Images, augmentation and the handling of bad input
(``data.cefa.skip_unreadable``;
a missing video folder, frame or modality image) and the input reader are as for
:mod:`mmanet.data.casia_surf` (:mod:`mmanet.data.face`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations
from pathlib import Path

from mmanet.config import DataConfig
from mmanet.data.base import DataBundle, DataError, InputReader
from mmanet.data.face import (
    ATTACK,
    BONA_FIDE,
    FaceReader,
    FaceRecord,
    FaceSettings,
    check_images,
    face_bundle,
    face_options,
    select_modalities,
)
from mmanet.data.transforms import face_transforms
from mmanet.errors import ConfigError
from mmanet.registry import DATASETS

RACES = ("AF", "CA", "EA")
MODALITY_FOLDERS = {"rgb": "profile", "depth": "depth", "ir": "ir"}
FRAME_SUFFIXES = (".jpg", ".jpeg", ".png")
REAL, CLOTH, PHOTO, SCREEN = 1, 2, 3, 4  # PAI codes, the last field of a video name
PAI_TO_CLASS = {REAL: BONA_FIDE, CLOTH: ATTACK, PHOTO: ATTACK, SCREEN: ATTACK}
PAI_NAMES = {CLOTH: "cloth", PHOTO: "photo", SCREEN: "screen"}  # attack types (the worst's APCER)
DEVICES = (1, 3)  # rssdk, bag
SESSIONS = (1, 2)  # indoor, outdoor
SUBJECTS = {"train": range(0, 200), "val": range(200, 300), "test": range(300, 500)}

SplitRule = tuple[tuple[str, ...], tuple[int, ...]]  # (races, PAI codes)


def _protocol_table() -> dict[str, dict[str, SplitRule]]:
    """Protocol name -> split -> the races and PAI codes it takes (see the module docstring)."""
    table: dict[str, dict[str, SplitRule]] = {}
    all_pais = (REAL, CLOTH, SCREEN)
    for k, (seen, unseen) in enumerate(permutations(RACES, 2), start=1):
        table[f"1@{k}"] = {
            "train": ((seen,), all_pais),
            "val": ((seen,), all_pais),
            "test": ((unseen,), all_pais),
        }
        table[f"4@{k}"] = {
            "train": ((seen,), (REAL, SCREEN)),
            "val": ((seen,), (REAL, SCREEN)),
            "test": ((unseen,), (REAL, CLOTH)),
        }
    for k, (known, unknown) in enumerate(((CLOTH, SCREEN), (SCREEN, CLOTH)), start=1):
        table[f"2@{k}"] = {
            "train": (RACES, (REAL, known)),
            "val": (RACES, (REAL, known)),
            "test": (RACES, (REAL, unknown)),
        }
    return table


PROTOCOLS = _protocol_table()


@dataclass
class CeFASettings(FaceSettings):
    """``data.cefa``: CASIA-SURF's image settings, the protocol (e.g. ``4@5``, the paper's)
    and the frames taken from each video (evenly strided; None: all)."""

    KEY = "data.cefa"

    protocol: str | None = None  # one of PROTOCOLS; the paper's configs: "4@5"
    frames_per_video: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.protocol is not None and self.protocol not in PROTOCOLS:
            raise ConfigError(
                f"data.cefa.protocol must be one of {sorted(PROTOCOLS)}, got {self.protocol!r}"
            )
        if self.frames_per_video is not None and self.frames_per_video < 1:
            raise ConfigError(
                f"data.cefa.frames_per_video must be >= 1, got {self.frames_per_video}"
            )


def parse_video_name(name: str) -> tuple[int, int, int, int] | None:
    """``race_subject_device_session_pai`` -> (subject, device, session, pai), else None."""
    fields = name.split("_")
    if len(fields) != 5 or not all(f.isdigit() for f in fields):
        return None
    _, subject, device, session, pai = (int(f) for f in fields)
    return subject, device, session, pai


def find_videos(
    root: Path, race: str, protocol: str
) -> list[tuple[Path, tuple[int, int, int, int]]]:
    """Every video folder of one race with its parsed name, in sorted order."""
    race_dir = root / race
    if not race_dir.is_dir():
        raise DataError(f"CeFA race folder not found: {race_dir} (protocol {protocol} uses {race})")
    videos = []
    for subject_dir in sorted(p for p in race_dir.iterdir() if p.is_dir()):
        for video_dir in sorted(p for p in subject_dir.iterdir() if p.is_dir()):
            fields = parse_video_name(video_dir.name)
            if fields is not None:
                videos.append((video_dir, fields))
    return videos


def video_frames(video_dir: Path, frames_per_video: int | None) -> list[str]:
    """The frame file names of a video's RGB ("profile") folder, sorted, optionally strided."""
    folder = video_dir / MODALITY_FOLDERS["rgb"]
    if not folder.is_dir():
        return []
    frames = sorted(p.name for p in folder.iterdir() if p.suffix.lower() in FRAME_SUFFIXES)
    if frames_per_video is not None and len(frames) > frames_per_video:
        frames = frames[:: len(frames) // frames_per_video][:frames_per_video]
    return frames


def load_cefa(
    root: str | Path | None,
    protocol: str | None,
    modalities: Sequence[str] | None = None,
    *,
    frames_per_video: int | None = None,
    image_size: int = 112,
    resize: int = 144,
    rotation: float = 30.0,
    augment: bool = True,
    skip_unreadable: bool = False,
) -> DataBundle:
    """The splits of one CeFA protocol under ``root`` (see the module docstring)."""
    if root is None:
        raise DataError("data.name=cefa needs data.root=<folder with AF/, CA/, EA/>")
    if protocol not in PROTOCOLS:
        raise DataError(
            f"unknown CeFA protocol data.cefa.protocol={protocol!r}; use one of {sorted(PROTOCOLS)}"
        )
    if frames_per_video is not None and frames_per_video < 1:
        raise DataError(f"CeFA frames per video must be >= 1, got {frames_per_video}")
    root = Path(root)
    names = select_modalities(modalities, "CeFA")
    transforms = face_transforms(names, image_size, resize, rotation, augment)
    rules = PROTOCOLS[protocol]
    races = sorted({race for races, _ in rules.values() for race in races})
    videos = {race: find_videos(root, race, protocol) for race in races}

    splits, skipped = {}, []
    for split, (split_races, pais) in rules.items():
        origin = f"CeFA protocol {protocol} ({split})"
        records = []
        for race in split_races:
            for video_dir, (subject, device, session, pai) in videos[race]:
                if not (
                    subject in SUBJECTS[split]
                    and device in DEVICES
                    and session in SESSIONS
                    and pai in pais
                ):
                    continue
                frames = video_frames(video_dir, frames_per_video)
                if not frames:
                    missing = f"{video_dir / MODALITY_FOLDERS['rgb']}: no frames"
                    if not skip_unreadable:
                        raise DataError(f"{origin}: {missing}")
                    skipped.append(missing)
                for frame in frames:
                    paths = {m: video_dir / MODALITY_FOLDERS[m] / frame for m in names}
                    records.append(FaceRecord(paths, PAI_TO_CLASS[pai], origin, PAI_NAMES.get(pai)))
        kept, left_out = check_images(records, skip_unreadable)
        splits[split] = kept
        skipped += left_out
    return face_bundle(splits, transforms, image_size, skipped, f"CeFA protocol {protocol}")


@DATASETS.register("cefa", settings=CeFASettings)
class CeFA:
    """``data.name=cefa``: the loader and the input reader."""

    @staticmethod
    def build(cfg: DataConfig) -> DataBundle:
        own = cfg.cefa
        return load_cefa(
            cfg.root,
            own.protocol,
            cfg.modalities,
            frames_per_video=own.frames_per_video,
            **face_options(cfg, own),
        )

    @staticmethod
    def reader(cfg: DataConfig) -> InputReader:
        return FaceReader(cfg.cefa.image_size)
